"""The kernel configs (configs/kernels/*.yaml, shipped with the package)."""
from pathlib import Path

from mmcore.config import KernelConfig, load_kernel_config
from procfs.cli import KERNELS_DIR, default_configs

__all__ = ['KERNELS_DIR', 'config_names', 'default_config_names', 'kernel_config']


def config_names():
    """Names of every kernel config in configs/kernels/, sorted."""
    return sorted(load_kernel_config(str(p)).name for p in KERNELS_DIR.glob('*.yaml'))


def default_config_names():
    """The configs served by default: every 64-bit one."""
    return sorted(load_kernel_config(p).name for p in default_configs())


def kernel_config(config):
    """A KernelConfig from a config name ('no_page_mapcount'), a path to a
    config file, or a KernelConfig."""
    if isinstance(config, KernelConfig):
        return config
    path = Path(config)
    if not path.is_file():
        for p in KERNELS_DIR.glob('*.yaml'):
            cfg = load_kernel_config(str(p))
            if cfg.name == str(config):
                return cfg
        from mmcore.config import ConfigError
        raise ConfigError('unknown kernel config %r (configs: %s)'
                          % (str(config), ', '.join(config_names())))
    return load_kernel_config(str(path))
