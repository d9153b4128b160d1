"""Every torch network the project trains, on one floor (torch; never imported by the inference path).

- ``compact_unet``       — the compact pixel-space inpainting U-Net (the default model's network);
- ``compact_controlnet`` — the compact CCIS ControlNet on that U-Net, with its word-vocabulary text encoder;
- ``sd_controlnet``      — CCIS-Diff's ControlNet on Stable Diffusion 1.5 (diffusers-based);
- ``segmenter``          — the judge's compact segmentation U-Net.

The exporters (engine.export), the training tasks (engine.training) and the judge lab (engine.evaluation)
import networks from here; nothing here imports them back.
"""
