"""What the performer sends in: the browser's camera and microphone on their way up to the
cloud, and OSC parameter updates from their gear."""
