"""``rafter.train.huggingface.transformers``: run a Hugging Face ``transformers.Trainer`` (or a TRL trainer,
which subclasses it) inside a rafter train function, with Ray Train 2.60's names.

    from rafter.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    def train_func():
        trainer = transformers.Trainer(model=model, args=args, train_dataset=...)
        trainer.add_callback(RayTrainReportCallback())   # logs and checkpoints reach rafter
        trainer = prepare_trainer(trainer)
        checkpoint = rafter.train.get_checkpoint()       # set after a restart or a resumed run
        if checkpoint:
            with checkpoint.as_directory() as d:
                trainer.train(resume_from_checkpoint=os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME))
        else:
            trainer.train()
"""

from rafter.train.huggingface.transformers._transformers_utils import RayTrainReportCallback, prepare_trainer

__all__ = ["RayTrainReportCallback", "prepare_trainer"]
