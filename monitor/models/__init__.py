"""Deployed models as backbones: build, load weights safely, find the head and the stages."""

from ._build import Backbone, load_backbone
from ._surgery import drop_head, find_head, find_stages, submodule
from ._weights import fit_state_dict, read_state_dict

__all__ = [
    "Backbone",
    "drop_head",
    "find_head",
    "find_stages",
    "fit_state_dict",
    "load_backbone",
    "read_state_dict",
    "submodule",
]
