"""Training, evaluation and publishing of EmotionNet on RAVDESS."""
