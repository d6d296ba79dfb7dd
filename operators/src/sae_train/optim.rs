//! Adam with linear warm-up and linear decay, as in the SAE literature.

/// Adam's moment estimates for one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

impl Moments {
    /// Zero moments for a tensor of `n` values.
    pub fn new(n: usize) -> Moments {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
}

/// Adam hyperparameters and the learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Peak learning rate.
    pub lr: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// Total steps, when known: the rate decays linearly to 0 over the last `decay_fraction`.
    pub total_steps: Option<u64>,
    /// Fraction of `total_steps` spent decaying.
    pub decay_fraction: f32,
}

impl Adam {
    /// The learning rate at `step` (1-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        let warm = (step as f32 / self.warmup_steps.max(1) as f32).min(1.0);
        let decay = match self.total_steps {
            Some(total) if self.decay_fraction > 0.0 => {
                let start = (total as f32 * (1.0 - self.decay_fraction)) as u64;
                if step < start {
                    1.0
                } else {
                    (total.saturating_sub(step)) as f32 / (total - start).max(1) as f32
                }
            }
            _ => 1.0,
        };
        self.lr * warm * decay
    }

    /// One bias-corrected Adam update of `param` with gradient `grad` at `step` (1-based).
    pub fn update(&self, step: u64, param: &mut [f32], grad: &[f32], mom: &mut Moments) {
        let lr = self.lr_at(step);
        let c1 = 1.0 - self.beta1.powi(step as i32);
        let c2 = 1.0 - self.beta2.powi(step as i32);
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(mom.m.iter_mut()).zip(mom.v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let a = Adam {
            lr: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 10,
            total_steps: Some(100),
            decay_fraction: 0.2,
        };
        assert_eq!(a.lr_at(5), 0.5);
        assert_eq!(a.lr_at(50), 1.0);
        assert_eq!(a.lr_at(90), 0.5);
        assert_eq!(a.lr_at(100), 0.0);
    }

    #[test]
    fn first_update_moves_by_the_learning_rate_against_the_gradient_sign() {
        let a = Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 1,
            total_steps: None,
            decay_fraction: 0.0,
        };
        let mut p = vec![1.0, 1.0];
        let mut m = Moments::new(2);
        a.update(1, &mut p, &[2.0, -0.5], &mut m);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6, "{p:?}");
    }
}
