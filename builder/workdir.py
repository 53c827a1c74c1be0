"""The layout of a run's directory, `<out>/<recipe>/<target>/`. Every path is relative to it."""

PLAN = "plan.json"
MANIFEST = "manifest.json"
LOGS = "logs"
SOURCE_DIR = "work/source"          # the fetched model (and Keras weights)
INPUTS = "work/inputs"              # fetched calibration/validation files, with index.json
RECORDS = "work/records"            # one JSON record per executed step
VERSIONS = "work/versions"          # tool versions per stage, read inside the image that ran it
CALIBRATION = "work/data/calibration.npy"
VALIDATION = "work/data/validation.npy"
LABELS = "work/data/validation_labels.json"
PHOTOS = "work/data/validation_photos.json"  # each validation sample's image: crops of one photo are not independent
BOXES = "work/data/validation_boxes.json"  # each validation sample's ground-truth boxes, in its view
SOURCE_OUTPUTS = "work/data/source_outputs.npz"  # the source model's own outputs on the validation samples
RUN = "work/run.json"           # the run so far (sources, timings, images): what `builder collect` finishes from
