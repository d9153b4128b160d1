"""CCIS-Diff clinical captions, measured from a frame's pixels and its polyp mask (no torch).

- scene.py: the frame at the analysis scale, in L*a*b*, with its field of view, highlights and polyps;
- attributes.py: one function per attribute (colour, surface, size, outline, elevation, position, partly
  out of view, background, lighting), each documented with its thresholds;
- template.py: the sentence from the attributes;
- captioner.py: ``caption_frame(frame, mask)`` → per-polyp attributes and texts;
- batch.py: ``main.py caption`` over a folder → a captions file (engine.dataset.caption_writer), resumable;
- vlm.py: the optional local vision-language model (torch and transformers, imported only there);
- cli.py: the command's arguments and output.
"""
