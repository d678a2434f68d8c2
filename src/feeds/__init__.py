"""The feeds: batches of crops cut on the host or on the accelerator, and their augmentation. Imports
src.dataset and src.base."""
