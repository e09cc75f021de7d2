/**
 * Prediction on one new scan with a trained model: prepare (preprocess as the model's
 * training cases were) -> predict (label volume, overlays, metrics). The scan is the
 * workflow's data path: a volume file, a case folder or a B-scan folder.
 *
 * The stages read three run-time artifacts of the training run: `model` (a train model
 * folder), `history` (its train history) and `preprocessInfo` (a preprocess info of its
 * training cases, which carries the reference histogram). `workflow predict` fills them in.
 *
 * Profiles: `cpu` and `paper` use the stage defaults, and `ci` draws one overlay.
 */
import * as Workflow from "../src/runtime/workflow.ts"
import { predict } from "../stages/predict.ts"
import { prepare } from "../stages/predict-prepare.ts"
import { scanSource } from "../stages/predict-scan.ts"

export const workflow = Workflow.make({
  name: "predict",
  sources: { scan: scanSource },
  stages: [prepare, predict],
  profiles: { cpu: {}, paper: {}, ci: { predict: { overlaySlices: 1 } } },
  seed: 2018,
  outputs: {
    "label volume": "predict/labels",
    "NIfTI labels": "predict/labelsNifti",
    overlays: "predict/overlays",
    metrics: "predict/metrics",
    preprocessed: "prepare/volume"
  }
})
