"""Training (torch; never imported by the inference path): the one trainer (loop) and the contract a model fills
in for it (task), its checkpoints and run files, the training data (corpus, captions, Polyp-Gen's spatial-aware
pairs), the recipe from a command's options to the trainer's settings and from a trained model to its folder, card
(model_card) and bundle, and the tasks it runs (compact inpainting model, SD-inpainting fine-tuning, the CCIS
ControlNets), registered by ``main.py train``'s method and preset in runs."""
