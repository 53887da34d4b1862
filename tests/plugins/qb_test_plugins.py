"""Schemes that fail on purpose, loaded through QUANTBENCH_PLUGINS by the isolation tests."""

import os
import signal

from quantbench.schemes.registry import Scheme, register


class Raises(Scheme):
    def apply(self, model, device):
        raise RuntimeError("this scheme fails on purpose")


class KilledLikeOOM(Scheme):
    def apply(self, model, device):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


class Hangs(Scheme):
    """Never finishes, unless QB_TEST_NO_HANG is set (the resume test's second invocation)."""

    def apply(self, model, device):
        import time

        if not os.environ.get("QB_TEST_NO_HANG"):
            time.sleep(3600)
        return model


class LostWorker(Scheme):
    """Kills the process that started this cell (a Ray worker) as if its node were lost: once
    (a marker in QB_TEST_MARKERS remembers), or every time."""

    def __init__(self, *args, always: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "always", always)

    def apply(self, model, device):
        from pathlib import Path

        marker = Path(os.environ.get("QB_TEST_MARKERS", "/tmp")) / self.name
        if self.always or not marker.exists():
            marker.touch()
            from quantbench.worker import LAUNCH

            os.kill(LAUNCH["started_by"], signal.SIGKILL)
            import time

            time.sleep(60)  # PR_SET_PDEATHSIG ends this process with its parent
        return model


class MarksItsProcess(Scheme):
    """Leaves a mark in torch's module, and fails where an earlier cell's mark is there: cells
    that shared a process, or a server that ran a cell before forking the next."""

    def apply(self, model, device):
        import torch

        seen = getattr(torch, "_qb_test_mark", None)
        if seen is not None:
            raise RuntimeError(f"the mark of an earlier cell (pid {seen}) is in this one")
        torch._qb_test_mark = os.getpid()
        return model


class Hog(Scheme):
    """Allocates and touches QB_TEST_HOG_BYTES (default 3 GB) of host memory."""

    def apply(self, model, device):
        import torch

        size = int(os.environ.get("QB_TEST_HOG_BYTES", 3 * 10**9))
        model.hog = torch.ones(size, dtype=torch.uint8)
        return model


class CudaOOM(Scheme):
    """Asks the GPU for more than it has: a real CUDA out-of-memory error."""

    def apply(self, model, device):
        import torch

        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        model.hog = torch.empty(2 * total, dtype=torch.uint8, device=device)
        return model


class BreaksTheGraph(Scheme):
    """A host read inside every forward: torch.compile(fullgraph=True) must refuse it."""

    def apply(self, model, device):
        def peek(module, args):
            if args[0].abs().sum().item() < 0:  # never true; the .item() is the point
                raise AssertionError

        model.model.layers[0].register_forward_pre_hook(peek)
        return model


register(Raises("test-raises", "test", 32, ("cpu",), description="raises in apply"))
register(KilledLikeOOM("test-killed", "test", 32, ("cpu",), description="SIGKILLs itself"))
register(Hangs("test-hangs", "test", 32, ("cpu",), description="never finishes"))
register(LostWorker("test-lost-once", "test", 32, ("cpu",), description="loses its worker once"))
register(LostWorker("test-lost-always", "test", 32, ("cpu",), always=True,
                    description="loses its worker every time"))
register(MarksItsProcess("test-marks-a", "test", 32, ("cpu",), description="marks its process"))
register(MarksItsProcess("test-marks-b", "test", 32, ("cpu",), description="marks its process"))
register(Hog("test-hog", "test", 32, ("cpu", "cuda"), description="fills host memory"))
register(CudaOOM("test-cuda-oom", "test", 32, ("cuda",), description="overfills the GPU"))
register(BreaksTheGraph("test-graph-break", "test", 32, ("cpu", "cuda"),
                        description="reads a tensor on the host inside forward"))
register(Scheme("test-needs-missing-lib", "test", 8, ("cpu", "cuda"),
                packages=(("qb_no_such_module", "qb-no-such-dist"),), extra="qbmissing",
                description="needs a library that is not installed"))


class Twin(Scheme):
    """fp32 under another name: the A/A test measures one scheme as two cells of one run."""

    def compute_dtype(self, device_type):
        return "float32"


register(Twin("test-fp32-twin", "test", 32, ("cpu", "cuda"), description="fp32, a second time"))


class TwinBf16(Scheme):
    """bf16 under another name: the A/A test on a GPU."""

    def compute_dtype(self, device_type):
        return "bfloat16"


register(TwinBf16("test-bf16-twin", "test", 16, ("cpu", "cuda"), description="bf16, a second time"))
