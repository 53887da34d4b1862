"""KV-cache formats (`--kv-cache`, `scheme:kv=...`): what they are, which runtime runs which,
and the torch caches that implement them."""

from quantbench.kvcache.formats import (EVAL_CHUNK, FORMATS, GGML_ELEMENT_BYTES, KVFormat,  # noqa: F401
                                        check_runtime, get)
