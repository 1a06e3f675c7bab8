"""The training engine that pretraining and joint training both drive."""
