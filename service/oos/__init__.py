"""Out-of-scope (OOS) detection over an NLU's outputs: scores, a validation-calibrated threshold,
and a detector that can be saved next to a model.

A message is flagged out of scope when its in-scope score is below the threshold, or when the
NLU's top intent is itself an OOS label (`oos` in CLINC150, `out_of_scope` in the demo pack).

- `service.oos.scores`: the scores (msp, knn, centroid, combined).
- `service.oos.calibration`: the threshold and temperature, fitted on validation data only.
- `service.oos.detector`: `OOSDetector` (fit, score, flag, save/load), what the assistant runs.

Pure numpy: no torch import, so the service can load a detector without the training stack.
"""
from service.oos.calibration import (
                                     DEFAULT_MAX_ACCURACY_DROP,
                                     OBJECTIVES,
                                     OOSCalibration,
                                     calibrate_oos_threshold,
                                     oos_figures,
                                     validation_temperature,
)
from service.oos.detector import DETECTOR_FILE, REFERENCE_FILE, OOSDetector
from service.oos.scores import (
                                     OOS_LABELS,
                                     SCORE_METHODS,
                                     apply_temperature,
                                     centroid_similarity_score,
                                     class_centroids,
                                     combine_scores,
                                     is_oos_label,
                                     knn_similarity_score,
                                     l2_normalise,
                                     max_prob_score,
                                     oos_mask,
                                     prob_logit,
)

__all__ = ["DEFAULT_MAX_ACCURACY_DROP", "DETECTOR_FILE", "OBJECTIVES", "OOSCalibration", "OOSDetector", "OOS_LABELS",
           "REFERENCE_FILE", "SCORE_METHODS", "apply_temperature", "calibrate_oos_threshold",
           "centroid_similarity_score", "class_centroids", "combine_scores", "is_oos_label", "knn_similarity_score",
           "l2_normalise", "max_prob_score", "oos_figures", "oos_mask", "prob_logit", "validation_temperature"]
