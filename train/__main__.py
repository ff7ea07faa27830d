"""python -m train --data DIR --out checkpoints/NAME [--protocol actors random] [--push-to-hub REPO_ID]"""

import argparse

from ser_model.model import ModelConfig

from .augment import ChannelConfig
from .train import PROTOCOLS, TrainConfig, main

CHANNELS = ("reverb", "noise", "mic", "hiss", "telephone", "codec", "gain")  # each has a --NAME-prob option


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("--data", required=True, help="RAVDESS folder (official 48 kHz WAV or 16 kHz FLAC)")
    parser.add_argument("--out", default=defaults.out, help="checkpoint folder to write")
    parser.add_argument(
        "--protocol",
        nargs="*",
        default=defaults.protocols,
        choices=PROTOCOLS,
        dest="protocols",
        help="evaluations to run before the final fit: actors (unseen speakers), random (80/10/10)",
    )
    parser.add_argument("--no-final", action="store_false", dest="final", help="evaluate only; ship no model")
    parser.add_argument("--actors", type=int, nargs="*", help="use only these actors")
    parser.add_argument("--folds", type=int, default=defaults.n_folds, dest="n_folds")
    parser.add_argument("--only-folds", type=int, nargs="+", help="run just these folds (1-based)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=defaults.early_stopping,
        help="hold one man and one woman out to stop on; --no-early-stopping trains on them for the full schedule",
    )
    parser.add_argument(
        "--ema-decay", type=float, default=defaults.ema_decay, help="weight average kept and shipped; 0 = off"
    )
    channel = parser.add_argument_group("channel augmentation (before trimming, as the app hears; 0 turns one off)")
    for name in CHANNELS:
        channel.add_argument(f"--{name}-prob", type=float, default=getattr(defaults.channels, f"{name}_prob"))
    channel.add_argument(
        "--noise-types", nargs="+", default=defaults.channels.noise_types, choices=["white", "pink", "brown", "babble"]
    )
    channel.add_argument("--snr", type=float, nargs=2, default=defaults.channels.snr_db, metavar=("MIN", "MAX"))
    channel.add_argument(
        "--snr-curriculum",
        type=float,
        default=defaults.channels.snr_curriculum,
        help="share of the schedule over which the lowest SNR falls from MAX to MIN (0 = the full range throughout)",
    )
    channel.add_argument("--rt60", type=float, nargs=2, default=defaults.channels.rt60, metavar=("MIN", "MAX"))
    channel.add_argument(
        "--gain-db",
        type=float,
        nargs=2,
        default=defaults.channels.gain_db,
        metavar=("MIN", "MAX"),
        help="the microphone gain channel's range: quiet microphones (MIN) to hot ones that clip (MAX)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        nargs="+",
        default=defaults.speed_factors,
        dest="speed_factors",
        help="speed perturbation factors, e.g. 0.9 1.0 1.1 (1.0 alone = off)",
    )
    parser.add_argument(
        "--time-shift",
        action=argparse.BooleanOptionalAction,
        default=defaults.time_shift,
        help="random placement of each clip in its window",
    )
    parser.add_argument(
        "--vtlp",
        type=float,
        nargs=2,
        default=defaults.vtlp_range,
        dest="vtlp_range",
        metavar=("MIN", "MAX"),
        help="vocal tract length perturbation: stretch each clip's spectrum by a factor in this range, e.g. 0.9 1.1",
    )
    parser.add_argument("--spec-augment", action=argparse.BooleanOptionalAction, default=defaults.spec_augment)
    parser.add_argument(
        "--spec-augment-floor",
        type=float,
        default=defaults.spec_augment_floor,
        metavar="SHARE",
        help="with --spec-augment: share of clips whose masked bands are filled with the floor, not the mean",
    )
    parser.add_argument(
        "--spec-augment-time-masks",
        type=int,
        default=defaults.spec_augment_time_masks,
        metavar="N",
        help="with --spec-augment: time masks per clip (0 = frequency masks only)",
    )
    parser.add_argument("--mixup", type=float, default=defaults.mixup_alpha, dest="mixup_alpha", help="alpha; 0 = off")
    parser.add_argument(
        "--consistency",
        type=float,
        default=defaults.consistency_weight,
        dest="consistency_weight",
        help="weight of the clean/degraded consistency loss; 0 = off",
    )
    parser.add_argument(
        "--denoise",
        type=float,
        default=defaults.denoise_weight,
        dest="denoise_weight",
        help="weight of the training-only decoder's clean log-mel loss (train/denoise.py); 0 = off",
    )
    distill = parser.add_argument_group("distillation (train/distill.py)")
    distill.add_argument(
        "--teachers",
        nargs="+",
        default=defaults.teachers,
        metavar="RUN_FOLDER",
        help="output folders of earlier runs with the same folds; their models of each fold (and final) teach",
    )
    distill.add_argument("--distill-weight", type=float, default=defaults.distill_weight, help="0..1")
    distill.add_argument("--distill-temperature", type=float, default=defaults.distill_temperature)
    distill.add_argument(
        "--teachers-hear-clean",
        action=argparse.BooleanOptionalAction,
        default=defaults.teachers_hear_clean,
        help="teachers score each clip clean while the student hears it degraded",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--cache-dir", default=defaults.cache_dir)
    parser.add_argument("--resume", action="store_true", help="continue stopped runs from their last epoch")
    parser.add_argument(
        "--robustness",
        action=argparse.BooleanOptionalAction,
        default=defaults.robustness,
        help="score each test fold under every channel condition (train.robustness)",
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the checkpoint folder (token: HF_TOKEN)")
    parser.add_argument(
        "--model",
        metavar="KEY=VALUE",
        nargs="*",
        default=[],
        help="override ModelConfig fields, e.g. d_model=96 cnn_channels=16,32,64",
    )
    args = vars(parser.parse_args(argv))
    if not 0 <= args["spec_augment_floor"] <= 1 or (args["spec_augment_floor"] and not args["spec_augment"]):
        parser.error("--spec-augment-floor takes a share from 0 to 1, with --spec-augment")
    time_masks = args["spec_augment_time_masks"]
    if time_masks < 0 or (time_masks != defaults.spec_augment_time_masks and not args["spec_augment"]):
        parser.error("--spec-augment-time-masks takes a count from 0, with --spec-augment")
    model = ModelConfig(
        **{k: _parse_value(ModelConfig, k, v) for k, v in (kv.split("=", 1) for kv in args.pop("model"))}
    )
    channels = ChannelConfig(
        **{f"{name}_prob": args.pop(f"{name}_prob") for name in CHANNELS},
        noise_types=args.pop("noise_types"),
        snr_db=tuple(args.pop("snr")),
        snr_curriculum=args.pop("snr_curriculum"),
        rt60=tuple(args.pop("rt60")),
        gain_db=tuple(args.pop("gain_db")),
    )
    return TrainConfig(**args, model=model, channels=channels)


def _parse_value(cls, key: str, value: str):
    default = getattr(cls(), key)
    if isinstance(default, list):
        return [type(default[0])(v) for v in value.split(",")]
    if isinstance(default, bool):  # e.g. normalize_bands=true; bool("false") would be True
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{key} takes true or false, not {value!r}")
        return value.lower() == "true"
    if default is None:  # optional numbers, e.g. dynamic_range_db=60
        return None if value.lower() == "none" else float(value)
    return type(default)(value)


if __name__ == "__main__":
    main(parse_args())
