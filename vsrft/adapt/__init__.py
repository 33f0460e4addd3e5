"""Test-time adaptation: fine-tune the network on the video's own keyframes against ||A f(y) - y||^2."""
from vsrft.adapt.finetune import AdaptConfig, AdaptResult, finetune
from vsrft.adapt.policy import KeyframePolicy

__all__ = ["AdaptConfig", "AdaptResult", "finetune", "KeyframePolicy"]
