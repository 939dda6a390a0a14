"""attrrob: attributional robustness, reproduced (Sarkar et al., AAAI 2021; RAR, NeurIPS 2019)."""

__version__ = "0.1.0"
