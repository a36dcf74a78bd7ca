"""Regenerates tests/data/tf_references.json with TensorFlow (not a test dependency).

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu scikit-image
    /tmp/tfvenv/bin/python tests/data/generate_tf_references.py

Values: tf.image.ssim and tf.image.ssim_multiscale (defaults: 11-tap Gaussian,
sigma 1.5, k1=0.01, k2=0.03, MS-SSIM weights of Wang et al. 2003) on float32
inputs in [0, 1] with max_val=1.0, for every case of tests/images.py.
"""

import json
import pathlib
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import images

out = {"tensorflow": tf.__version__, "settings": "max_val=1.0, float32, defaults", "cases": {}}
for name, distorted, reference in images.cases():
    a = tf.constant(distorted.astype(np.float32))
    b = tf.constant(reference.astype(np.float32))
    out["cases"][name] = {
        "ssim": float(tf.image.ssim(a, b, max_val=1.0)),
        "ms_ssim": float(tf.image.ssim_multiscale(a, b, max_val=1.0)),
    }
path = pathlib.Path(__file__).with_name("tf_references.json")
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {len(out['cases'])} cases to {path}")
