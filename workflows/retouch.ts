/**
 * The RETOUCH study: preprocess -> split -> roi -> train -> evaluate over the cases of
 * `--data DIR` (RETOUCH layout, NIfTI volumes or B-scan folders), or of the real sample
 * shipped in data/sample when `--data` is not given.
 *
 * Profiles: `cpu`, the default, trains a narrow U-Net on 128 x 64 patches, sized so that
 * `full` on the sample finishes in minutes on two cores. `paper` is the method's full
 * network and patch size. `ci` is the smallest run that still exercises every stage.
 */
import * as Workflow from "../src/runtime/workflow.ts"
import { evaluate } from "../stages/evaluate.ts"
import { preprocess } from "../stages/preprocess.ts"
import { roi } from "../stages/roi.ts"
import { split } from "../stages/split.ts"
import { datasetSource } from "../stages/support/dataset.ts"
import { train } from "../stages/train.ts"

export const workflow = Workflow.make({
  name: "retouch",
  sources: { dataset: datasetSource },
  stages: [preprocess, split, roi, train, evaluate],
  profiles: {
    cpu: {},
    paper: {
      train: {
        baseFilters: 64,
        depth: 4,
        patchHeight: 256,
        patchWidth: 128,
        dropoutRates: [0.25, 0.25, 0.5],
        epochs: 50,
        stepsPerEpoch: 500,
        validationBatches: 16,
        microBatchSize: 2
      }
    },
    ci: {
      train: {
        baseFilters: 4,
        epochs: 2,
        stepsPerEpoch: 4,
        validationBatches: 1,
        batchSize: 4,
        microBatchSize: 2
      },
      evaluate: { overlaySlices: 1, batchSize: 32 }
    }
  },
  // With this seed the sample's split holds out UMN24, the one sample case with fluid-free
  // B-scans, so its detection AUC is defined. Training then fits UMN26 and validates on DUKE01.
  seed: 7,
  outputs: {
    metrics: "evaluate/metrics.json",
    "label volumes": "evaluate/labels",
    overlays: "evaluate/overlays",
    model: "train/best",
    "ROI masks": "roi/mask",
    preprocessed: "preprocess/volume"
  }
})
