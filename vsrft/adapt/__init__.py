"""Test-time adaptation: fine-tune the network on the video's own keyframes against ||A f(y) - y||^2."""
from vsrft.adapt.finetune import MODEL_DEFAULTS, AdaptConfig, AdaptResult, TrainingWindow, finetune
from vsrft.adapt.policy import KeyframePolicy

__all__ = ["AdaptConfig", "AdaptResult", "MODEL_DEFAULTS", "finetune", "KeyframePolicy", "TrainingWindow"]
