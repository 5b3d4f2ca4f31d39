"""One media session on the cloud: its peer connection, the media buffer on one clock, the
paced output tracks and the input audio on its way into the pipeline."""
