"""The built-in benchmarks, one module each: importing this package imports every module in it, and each module
registers its benchmark (`eval.vlm.registry`). A new benchmark is one new file here, nothing else."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
