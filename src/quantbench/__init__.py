"""quantbench: measure what quantizing a large language model really buys."""

__version__ = "0.1.0"

from quantbench.errors import UsageError  # noqa: E402


def __getattr__(name):
    # Lazy so that `import quantbench` (and the CLI's --help) does not import torch.
    if name in ("LLMBenchmark", "RunResult", "CellResult"):
        from quantbench import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["LLMBenchmark", "RunResult", "CellResult", "UsageError", "__version__"]
