"""Deployed models as backbones: build, load weights safely, find the head and the stages.

Kinds: torchvision builders, TorchScript archives, python factories (`_build`), timm models
(`_timm`) and Hugging Face folders (`_hf`), each returning a `Backbone` (`_backbone`). `_probe` is run as a child process by the daemon side to learn library facts
(torchvision enums, timm pretrained configs) without importing torch there.
"""

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
