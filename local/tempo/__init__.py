"""The performer's tempo at the relay: where the beat comes from (a manual BPM with tap
tempo, Ableton Link, a MIDI clock, the page's Web MIDI clock), and how it reaches every
session's cloud on the media clock (docs/tempo.md)."""
