"""Install or check PyTorch for QGIS's own Python: ``landform:installdependencies``."""
import sys

from qgis.core import (
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
)

from ...core import deps, pip_install
from ...core.errors import LandformError
from .base import LandformAlgorithm

MODES = ["install", "check (report what is installed where)", "dry run (list what would be installed)"]
VARIANTS = ["auto (CUDA when an NVIDIA GPU is found, else CPU)", "CPU", "CUDA (NVIDIA GPU)"]


class InstallDependenciesAlgorithm(LandformAlgorithm):
    MODE = "MODE"
    VARIANT = "VARIANT"
    WHEELS = "WHEELS"
    LOG = "LOG"
    REPORT = "REPORT"
    FOLDER = "FOLDER"
    TORCH_VERSION = "TORCH_VERSION"
    DEVICE = "DEVICE"
    GROUP_ID = "setup"
    GROUP = "Set-up"

    def name(self):
        return "installdependencies"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Install deep-learning dependencies")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        pins = ", ".join(f"{k} {v}" for k, v in deps.PINS.items())
        return self.tr(
            f"<p>Installs PyTorch, torchvision and safetensors ({pins}), which the deep-learning algorithms "
            "(the FCN-ResNet of Yang et al. 2023) need, into a folder of this plugin in your QGIS profile, for "
            "the Python that QGIS itself runs. QGIS's own packages are left as they are (numpy is never "
            "upgraded); nothing is installed until you run this.</p>"
            "<p><b>Mode.</b> <i>install</i> runs pip, checks that PyTorch imports and reports the device it "
            "sees; <i>check</i> reports what is installed where (versions, CUDA, the folder, a second PyTorch "
            "elsewhere on the path), useful when asking for help; <i>dry run</i> lists what would be "
            "installed and how large it is.</p>"
            "<p><b>Variant.</b> CPU works everywhere (under 1 GB installed). CUDA needs an NVIDIA GPU with a "
            "recent driver (found with nvidia-smi) and takes about 5 GB.</p>"
            "<p><b>Wheel folder.</b> For a computer without internet: a folder of .whl files prepared on a "
            "connected one (run a dry run there to see which); only that folder is used.</p>"
            "<p>Cancelling stops pip and leaves nothing half-installed; the log file keeps pip's output. "
            "After an install the deep-learning algorithms work at once, unless this QGIS session had already "
            "loaded another PyTorch (then restart QGIS).</p>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterEnum(self.MODE, self.tr("Mode"), options=MODES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.VARIANT, self.tr("Variant"), options=VARIANTS,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.WHEELS, self.tr("Wheel folder (installing without internet)"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addOutput(QgsProcessingOutputFile(self.LOG, self.tr("Log file")))
        self.addOutput(QgsProcessingOutputString(self.REPORT, self.tr("Report")))
        self.addOutput(QgsProcessingOutputFolder(self.FOLDER, self.tr("Dependency folder")))
        self.addOutput(QgsProcessingOutputString(self.TORCH_VERSION, self.tr("PyTorch version")))
        self.addOutput(QgsProcessingOutputString(self.DEVICE, self.tr("Device PyTorch sees")))

    def process(self, parameters, context, feedback):
        from ... import dependencies

        mode = self.parameterAsEnum(parameters, self.MODE, context)
        wheels = self.parameterAsFile(parameters, self.WHEELS, context) or None
        profile = dependencies.profile_dir()
        folder = str(deps.deps_dir(profile))
        log = str(deps.deps_root(profile) / pip_install.LOG_NAME)
        if mode == 1:
            checked = pip_install.check(profile)
            report = pip_install.format_check(checked)
            for line in report.splitlines():
                feedback.pushInfo(line)
            t = checked.get("torch") or {}
            log = str(deps.deps_root(profile) / "check.log")
            deps.deps_root(profile).mkdir(parents=True, exist_ok=True)
            with open(log, "w", encoding="utf-8") as f:
                f.write(report + "\n")
            return self._outputs(log, report, folder, t.get("torch", ""), t.get("device", ""))
        request = self._request(parameters, context, feedback, wheels)
        request.proxy = dependencies.proxy_url()
        result = pip_install.install(profile, request, self.progress_from(feedback), dry_run=mode == 2)
        report = self._dry_run_report(result) if mode == 2 else self._install_report(result, profile)
        for line in report.splitlines():
            feedback.pushInfo(line)
        v = result.verified
        return self._outputs(str(result.log), report, folder, v.get("torch", ""), v.get("device", ""))

    def _request(self, parameters, context, feedback, wheels):
        """CPU or CUDA, from the choice and what nvidia-smi says."""
        choice = self.parameterAsEnum(parameters, self.VARIANT, context)
        gpu = deps.detect_gpu()
        feedback.pushInfo(f"NVIDIA GPU: {gpu.describe() if gpu else 'none detected'}")
        if choice == 2 and gpu is None and not wheels:
            raise LandformError("No NVIDIA GPU was found (nvidia-smi is missing or reports no driver): choose "
                                "the CPU variant, or install the NVIDIA driver first.")
        cuda = (choice == 2) or (choice == 0 and gpu is not None)
        if not cuda:
            return pip_install.Request("cpu", wheels)
        return pip_install.Request("cuda", wheels, deps.cuda_build_for(gpu) if gpu else None)

    @staticmethod
    def _dry_run_report(result):
        lines = [f"Would install {len(result.packages)} package(s):"]
        for p in result.packages:
            size = f"{p.size / 1e6:.0f} MB" if p.size else "size unknown"
            lines.append(f"  {p.pin()} ({size})")
        total = sum(p.size or 0 for p in result.packages)
        lines.append(f"Download: {total / 1e6:.0f} MB; disk needed: about "
                     f"{pip_install.DISK_FACTOR * total / 1e9:.1f} GB" if total else "Nothing to install.")
        return "\n".join(lines)

    @staticmethod
    def _install_report(result, profile):
        from ... import dependencies

        if result.folder is None:
            found = pip_install.verify(deps.find_python(), None)
            return (f"Nothing to install: PyTorch {found.get('torch', '?')} is already importable from "
                    f"{found.get('torch_file', '?')}.")
        dependencies.activate_at_load()
        v = result.verified
        lines = [f"Installed {len(result.packages)} package(s) into {result.folder} in {result.seconds:.0f} s.",
                 f"PyTorch {v.get('torch')} (torchvision {v.get('torchvision')}) imports; device: {v.get('device')}."]
        if getattr(sys.modules.get("torch"), "__file__", None):  # a module object, not a blocked import
            lines.append("This QGIS session had already loaded PyTorch: restart QGIS to use the new one.")
        else:
            lines.append("The deep-learning algorithms work now, in this QGIS session too.")
        return "\n".join(lines)

    def _outputs(self, log, report, folder, torch_version, device):
        return {self.LOG: log, self.REPORT: report, self.FOLDER: folder,
                self.TORCH_VERSION: torch_version, self.DEVICE: device}

