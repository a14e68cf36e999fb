"""Caption scores: the COCO metrics through pycocoevalcap and training's quick scores
(`coco_metrics`), CIDEr-D in NumPy (`cider_d`) and the parser that grades a caption against a
shapes scene (`scene_parser`).
"""
