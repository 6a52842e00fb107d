use super::*;

#[test]
fn defaults_are_one_epoch_of_plain_sgd() {
    let c = TrainingConfig::from_json("{}").unwrap();
    assert_eq!((c.epochs, c.batch_size, c.lr), (1, 10, 0.05));
    assert_eq!(
        c.optimizer,
        Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false
        }
    );
    assert_eq!(c.schedule, Schedule::Constant);
    assert_eq!(c.order, Order::Random);
}

#[test]
fn optimizers_parse_from_their_js_names() {
    let c = TrainingConfig::from_json(r#"{"optimizer":"sgd","momentum":0.9}"#).unwrap();
    assert_eq!(
        c.optimizer,
        Optimizer::Sgd {
            momentum: 0.9,
            nesterov: false
        }
    );
    assert_eq!(c.optimizer.state_slots(), 1);
    let c = TrainingConfig::from_json(r#"{"optimizer":"adamw","momentum":0.9}"#).unwrap();
    assert_eq!(c.optimizer, Optimizer::AdamW);
    assert_eq!(c.optimizer.state_slots(), 2);
    let c = TrainingConfig::from_json(r#"{"optimizer":"rmsprop","momentum":0.5}"#).unwrap();
    assert_eq!(c.optimizer, Optimizer::RmsProp { momentum: 0.5 });
    let err = TrainingConfig::from_json(r#"{"optimizer":"lbfgs"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bad training config: optimizer "lbfgs": use sgd, adam, adamw or rmsprop"#
    );
    assert!(TrainingConfig::from_json(r#"{"optimizer":"adam","nesterov":true}"#).is_err());
}

#[test]
fn misspelt_and_out_of_range_options_are_refused() {
    assert!(TrainingConfig::from_json(r#"{"learningRate":0.1}"#).is_err());
    assert!(TrainingConfig::from_json(r#"{"epochs":0}"#).is_err());
    assert!(TrainingConfig::from_json(r#"{"lr":-1}"#).is_err());
}

#[test]
fn augmentation_is_off_by_default_and_read_from_its_keys() {
    assert!(!TrainingConfig::from_json("{}").unwrap().augment.is_on());
    let c = TrainingConfig::from_json(
        r#"{"augmentCrop": 2, "augmentFlip": true, "augmentRotate": 10, "augmentMixup": 0.2}"#,
    )
    .unwrap();
    assert_eq!(
        c.augment,
        Augment {
            crop_padding: 2,
            flip: true,
            rotate_degrees: 10.0,
            mixup_alpha: 0.2,
            ..Default::default()
        }
    );
    assert!(TrainingConfig::from_json(r#"{"augmentContrast": 1.5}"#).is_err());
}

#[test]
fn batch_size_is_a_number_or_auto_within_a_budget() {
    let c = |json: &str| TrainingConfig::from_json(json);
    assert_eq!(
        c(r#"{"batchSize": "auto"}"#).unwrap().auto_batch,
        Some(DEFAULT_MEMORY_BUDGET)
    );
    let budget = c(r#"{"batchSize": "auto", "memoryBudgetMb": 64}"#).unwrap();
    assert_eq!(budget.auto_batch, Some(64 << 20));
    assert_eq!(c(r#"{"batchSize": 32}"#).unwrap().auto_batch, None);
    for (bad, why) in [
        (r#"{"batchSize": "big"}"#, "a number or \"auto\""),
        (
            r#"{"batchSize": 32, "memoryBudgetMb": 64}"#,
            "is for batchSize",
        ),
        (
            r#"{"batchSize": "auto", "memoryBudgetMb": -1}"#,
            "must be positive",
        ),
        (r#"{"batchSize": 0}"#, "at least 1"),
    ] {
        let err = c(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn precision_is_fp32_unless_asked() {
    let c = |json: &str| TrainingConfig::from_json(json);
    assert_eq!(c("{}").unwrap().precision, Precision::Fp32);
    assert_eq!(
        c(r#"{"precision": "fp16"}"#).unwrap().precision,
        Precision::Fp16
    );
    let err = c(r#"{"precision": "half"}"#).unwrap_err().to_string();
    assert!(err.contains("fp32") && err.contains("fp16"), "{err}");
}
