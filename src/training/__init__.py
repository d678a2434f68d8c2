"""Training: one fold (rows, feeds, model, resume, predictions), its files, callbacks, inference over whole
clips and label cleaning. Imports the layers below it: feeds, models, dataset, base."""
