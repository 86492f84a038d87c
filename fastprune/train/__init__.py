"""Fine-tuning and evaluation of segmentation networks; learned importance weights in `fastprune.train.gates`."""
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate, evaluate_tiles, predict_scene
from .loop import fit
from .losses import dice_loss, distillation_loss, segmentation_loss
from .metrics import classification_metrics, confusion_update, metrics_from_confusion
from .recalibrate import recalibrate_batchnorm

__all__ = ["fit", "evaluate", "evaluate_tiles", "predict_scene", "save_checkpoint", "load_checkpoint",
           "dice_loss", "distillation_loss", "segmentation_loss", "confusion_update", "classification_metrics",
           "metrics_from_confusion", "recalibrate_batchnorm"]
