"""The project's custom operators and sensors (the local runtime steps, the gcp platform's composite
stages, the TFJob and TF-Serving on GKE). They live here, beside the code they call, and import
nothing of the platforms that build them (taxi_pipeline.platforms) or of plugins/: the imports run
dags -> platforms -> operators -> the rest of taxi_pipeline, and plugins/ -> include/, never back."""
