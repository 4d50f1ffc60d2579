"""Former home of peak FLOP/s, MFU and the CPU runtime set-up, kept so old imports keep working.

New code imports from where each now lives: `lmjax.hardware` (device peaks, the CPU and hardware description),
`lmjax.runtime` (cache directory, compilation cache, YNN fusion flag, tcmalloc) and `lmjax.train.metrics.mfu`.
"""

from lmjax.hardware import (PEAK_ENV, PEAK_TFLOPS, device_peak_flops, hardware_summary, measure_matmul_peak,
                            peak_cache_path, vendor_peak_flops)
from lmjax.runtime import (CACHE_DIR_ENV, JAX_CACHE_ENV, YNN_FLAG, cache_dir, cpu_fast_path, enable_compilation_cache,
                           find_tcmalloc, reexec_with_tcmalloc, use_ynn_fusion)
from lmjax.train.metrics import mfu

__all__ = ["CACHE_DIR_ENV", "JAX_CACHE_ENV", "PEAK_ENV", "PEAK_TFLOPS", "YNN_FLAG", "cache_dir", "cpu_fast_path",
           "device_peak_flops", "enable_compilation_cache", "find_tcmalloc", "hardware_summary", "measure_matmul_peak",
           "mfu", "peak_cache_path", "reexec_with_tcmalloc", "use_ynn_fusion", "vendor_peak_flops"]
