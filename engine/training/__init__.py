"""Training (torch; never imported by the inference path): the one trainer (loop), its checkpoints, the training
data (corpus, Polyp-Gen's spatial-aware pairs), and the tasks it runs (compact inpainting model, SD-inpainting
fine-tuning)."""
