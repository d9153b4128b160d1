"""Datasets: reading frames, masks, labels and splits; writing images, masks, COCO, YOLO, manifest."""
