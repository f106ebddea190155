"""The Chicago-taxi model: feature contract, variants, TFT transform and Keras trainer.

Must stay free of TensorFlow imports: the Airflow DAG imports `taxi_model.variants` at parse time.
The modules that do import TensorFlow need Keras 2 (TFT and TFMA are built on tf_keras), and the
switch only works if set before TensorFlow is first imported, so it is set here, where every
`taxi_model.*` import passes first.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ logs from warnings up (its INFO lines are start-up chatter: CPU features).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
