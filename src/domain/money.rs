//! Money, carried digit for digit: [`Amount`] holds exactly what a BSON Decimal128 holds
//! (up to 34 significant digits, exponents −6176 to 6111, the sign, trailing zeros), and
//! writes it as Decimal128's canonical string. Nothing is ever rounded: a value that does
//! not fit is refused with the reason.

use std::fmt;
use std::str::FromStr;

use mongodb::bson::Decimal128;

/// Significant digits a Decimal128 holds.
pub const MAX_DIGITS: usize = 34;
/// The largest coefficient: 34 nines.
const MAX_COEFFICIENT: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;
/// The smallest exponent (of the coefficient's last digit).
pub const MIN_EXPONENT: i32 = -6176;
/// The largest exponent.
pub const MAX_EXPONENT: i32 = 6111;
/// Added to the exponent in the 14-bit field of the encoding.
const EXPONENT_BIAS: i32 = 6176;

/// An exact decimal amount: `(-1)^negative × coefficient × 10^exponent`. `1.0` and `1.00`
/// are different amounts here (coefficient 10 and 100): the scale is kept as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    negative: bool,
    coefficient: u128,
    exponent: i32,
}

/// Why a value is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not decimal number syntax.
    #[error("is not a decimal number")]
    NotANumber,
    /// NaN or an infinity.
    #[error("is {0}, not a number")]
    NotFinite(&'static str),
    /// More significant digits than Decimal128 holds.
    #[error("has {0} significant digits; a Decimal128 holds {MAX_DIGITS}, and it is never rounded")]
    TooManyDigits(usize),
    /// An exponent outside Decimal128's range.
    #[error("needs an exponent outside a Decimal128's range ({MIN_EXPONENT} to {MAX_EXPONENT})")]
    ExponentOutOfRange,
}

impl Amount {
    /// The zero with exponent 0 ("0").
    pub const ZERO: Amount = Amount {
        negative: false,
        coefficient: 0,
        exponent: 0,
    };

    /// The amount a Decimal128 holds. A coefficient beyond 34 digits (a non-canonical
    /// encoding) is zero, as the Decimal128 specification says; NaN and the infinities are
    /// refused.
    pub fn from_decimal128(value: Decimal128) -> Result<Amount, AmountError> {
        let bits = u128::from_le_bytes(value.bytes());
        let negative = bits >> 127 == 1;
        if (bits >> 123) & 0xF == 0xF {
            let name = match (bits >> 122 & 1 == 1, negative) {
                (true, _) => "NaN",
                (false, false) => "Infinity",
                (false, true) => "-Infinity",
            };
            return Err(AmountError::NotFinite(name));
        }
        let (biased, coefficient) = if (bits >> 125) & 0b11 == 0b11 {
            // The large form: its implied coefficient is at least 2^113, past 34 digits.
            ((bits >> 111) & 0x3FFF, 0)
        } else {
            let coefficient = bits & ((1u128 << 113) - 1);
            (
                (bits >> 113) & 0x3FFF,
                if coefficient > MAX_COEFFICIENT {
                    0
                } else {
                    coefficient
                },
            )
        };
        let exponent =
            i32::try_from(biased).map_err(|_| AmountError::ExponentOutOfRange)? - EXPONENT_BIAS;
        Amount::new(negative, coefficient, exponent)
    }

    /// The Decimal128 that holds this amount, sign, digits and exponent alike.
    pub fn to_decimal128(&self) -> Decimal128 {
        let biased = u128::try_from(self.exponent + EXPONENT_BIAS).unwrap_or(0);
        let bits = (u128::from(self.negative) << 127) | (biased << 113) | self.coefficient;
        Decimal128::from_bytes(bits.to_le_bytes())
    }

    /// A whole number.
    pub fn from_i64(value: i64) -> Amount {
        Amount {
            negative: value < 0,
            coefficient: u128::from(value.unsigned_abs()),
            exponent: 0,
        }
    }

    /// A finite double, taken at its shortest decimal form (`49.8`, not
    /// `49.799999999999997`).
    pub fn from_f64(value: f64) -> Result<Amount, AmountError> {
        if value.is_nan() {
            return Err(AmountError::NotFinite("NaN"));
        }
        if value.is_infinite() {
            return Err(AmountError::NotFinite(if value > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }));
        }
        // `{:e}` is the shortest round-trip form with an exponent: "4.98e1", "1e300".
        format!("{value:e}").parse()
    }

    fn new(negative: bool, coefficient: u128, exponent: i32) -> Result<Amount, AmountError> {
        if coefficient > MAX_COEFFICIENT {
            return Err(AmountError::TooManyDigits(digits(coefficient)));
        }
        if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
            return Err(AmountError::ExponentOutOfRange);
        }
        Ok(Amount {
            negative,
            coefficient,
            exponent,
        })
    }

    /// Below zero (a negative zero is not).
    pub fn is_negative(&self) -> bool {
        self.negative && self.coefficient != 0
    }

    /// Zero, whatever its sign and exponent.
    pub fn is_zero(&self) -> bool {
        self.coefficient == 0
    }

    /// The coefficient: the digits without the point.
    pub fn coefficient(&self) -> u128 {
        self.coefficient
    }

    /// The exponent of the last digit (−2 for `12.50`).
    pub fn exponent(&self) -> i32 {
        self.exponent
    }

    /// `self × factor`, exact: the same exponent, the coefficient multiplied; refused when
    /// the product needs more than 34 significant digits.
    pub fn checked_mul(&self, factor: u64) -> Result<Amount, AmountError> {
        let product = self
            .coefficient
            .checked_mul(u128::from(factor))
            .ok_or(AmountError::TooManyDigits(MAX_DIGITS + 1))?;
        Amount::new(self.negative, product, self.exponent)
    }
}

/// Decimal digits of `n` (1 for 0).
fn digits(n: u128) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl FromStr for Amount {
    type Err = AmountError;

    /// `12.50`, `-3`, `1.5e3`, `4E-7`: digit for digit, with the exponent the text implies
    /// (`12.50` has coefficient 1250 and exponent −2). Leading zeros are dropped; nothing
    /// else is, and a value a Decimal128 cannot hold exactly is refused.
    fn from_str(text: &str) -> Result<Amount, AmountError> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (number, exponent) = match unsigned.split_once(['e', 'E']) {
            Some((number, exponent)) => {
                let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AmountError::NotANumber);
                }
                // Saturates: any exponent this large is out of range anyway.
                let exponent = exponent
                    .parse::<i64>()
                    .unwrap_or(if exponent.starts_with('-') {
                        i64::MIN / 2
                    } else {
                        i64::MAX / 2
                    });
                (number, exponent)
            }
            None => (unsigned, 0),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
            return Err(AmountError::NotANumber);
        }
        let significant = whole.len() + fraction.len()
            - whole
                .bytes()
                .chain(fraction.bytes())
                .take_while(|b| *b == b'0')
                .count();
        if significant > MAX_DIGITS {
            return Err(AmountError::TooManyDigits(significant));
        }
        let mut coefficient: u128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            // At most 34 significant digits after leading zeros: no overflow.
            coefficient = coefficient * 10 + u128::from(b - b'0');
        }
        let places = i64::try_from(fraction.len()).map_err(|_| AmountError::ExponentOutOfRange)?;
        let exponent = i32::try_from(exponent.saturating_sub(places))
            .map_err(|_| AmountError::ExponentOutOfRange)?;
        Amount::new(negative, coefficient, exponent)
    }
}

impl fmt::Display for Amount {
    /// Decimal128's canonical string (the specification's to-scientific-string, as the
    /// server and the drivers print it): plain notation while the exponent is at most 0
    /// and the adjusted exponent at least −6 (`12.50`, `0.0000001`), else scientific
    /// (`1.2E+3`, `5E-7`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        // The digits on the stack: this runs for every payment event published.
        let mut buffer = [0u8; 40];
        let digits = coefficient_digits(self.coefficient, &mut buffer);
        let adjusted = self.exponent + digits.len() as i32 - 1;
        if self.exponent <= 0 && adjusted >= -6 {
            let places = self.exponent.unsigned_abs() as usize;
            if places == 0 {
                f.write_str(digits)
            } else if places >= digits.len() {
                f.write_str("0.")?;
                for _ in digits.len()..places {
                    f.write_str("0")?;
                }
                f.write_str(digits)
            } else {
                let (whole, fraction) = digits.split_at(digits.len() - places);
                write!(f, "{whole}.{fraction}")
            }
        } else {
            let (first, rest) = digits.split_at(1);
            f.write_str(first)?;
            if !rest.is_empty() {
                write!(f, ".{rest}")?;
            }
            write!(f, "E{}{adjusted}", if adjusted > 0 { "+" } else { "" })
        }
    }
}

/// The decimal digits of `n`, written at the end of `buffer` (39 digits at most).
fn coefficient_digits(mut n: u128, buffer: &mut [u8; 40]) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buffer[start..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(text: &str) -> Amount {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_canonical_string_is_the_drivers_and_keeps_every_digit() {
        for text in [
            "1.000000000000000000000000000000001",
            "9999999999999999999999999999999999",
            "12.50",
            "1.0",
            "1.00",
            "-0.001",
            "0",
            "0.00",
            "1E+3",
            "1.2E+5",
            "5E-7",
            "0.0000001",
            "1.000000000000000000000000000000000E+6144",
            "1E-6176",
            "-9.999999999999999999999999999999999E+6144",
        ] {
            let d: Decimal128 = text.parse().expect("bson parses it");
            let ours = Amount::from_decimal128(d).expect("an amount");
            assert_eq!(ours.to_string(), d.to_string(), "{text}");
            assert_eq!(ours.to_decimal128().bytes(), d.bytes(), "{text}");
        }
        assert_ne!(amount("1.0").to_string(), amount("1.00").to_string());
        assert_eq!(
            amount("1.000000000000000000000000000000001").coefficient(),
            10u128.pow(33) + 1
        );
    }

    #[test]
    fn what_a_decimal128_cannot_hold_is_refused_not_rounded() {
        assert_eq!(
            "1.0000000000000000000000000000000001".parse::<Amount>(),
            Err(AmountError::TooManyDigits(35))
        );
        assert_eq!(
            "1E+6112".parse::<Amount>(),
            Err(AmountError::ExponentOutOfRange)
        );
        assert_eq!(
            "1E-6177".parse::<Amount>(),
            Err(AmountError::ExponentOutOfRange)
        );
        assert_eq!(
            "1e99999999999999999999".parse::<Amount>(),
            Err(AmountError::ExponentOutOfRange)
        );
        for bad in [
            "", "-", ".", "1e", "1e+", "abc", "1.2.3", "1e1.5", "0x10", " 1",
        ] {
            assert_eq!(
                bad.parse::<Amount>(),
                Err(AmountError::NotANumber),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Amount::from_decimal128("NaN".parse().expect("NaN")),
            Err(AmountError::NotFinite("NaN"))
        ));
        assert!(matches!(
            Amount::from_decimal128("-Infinity".parse().expect("-Inf")),
            Err(AmountError::NotFinite("-Infinity"))
        ));
        assert_eq!(
            amount("9999999999999999999999999999999999").checked_mul(2),
            Err(AmountError::TooManyDigits(35))
        );
    }

    #[test]
    fn products_whole_numbers_and_doubles_are_exact() {
        assert_eq!(
            amount("19.99").checked_mul(3).map(|a| a.to_string()),
            Ok("59.97".into())
        );
        assert_eq!(
            amount("4.50").checked_mul(2).map(|a| a.to_string()),
            Ok("9.00".into())
        );
        assert_eq!(Amount::from_i64(-120).to_string(), "-120");
        assert_eq!(Amount::from_i64(i64::MIN).to_string(), i64::MIN.to_string());
        assert_eq!(
            Amount::from_f64(49.8).map(|a| a.to_string()),
            Ok("49.8".into())
        );
        assert_eq!(Amount::from_f64(5.0).map(|a| a.to_string()), Ok("5".into()));
        assert_eq!(
            Amount::from_f64(1e300).map(|a| a.to_string()),
            Ok("1E+300".into())
        );
        assert!(Amount::from_f64(f64::NAN).is_err());
        assert!(amount("-0").is_zero() && !amount("-0").is_negative());
        assert!(amount("-0.01").is_negative());
    }

    #[test]
    fn a_non_canonical_coefficient_is_zero_as_the_specification_says() {
        // Coefficient 10^34 (one past the largest), exponent 0.
        let bits = (6176u128 << 113) | 10u128.pow(34);
        let d = Decimal128::from_bytes(bits.to_le_bytes());
        let ours = Amount::from_decimal128(d).expect("an amount");
        assert!(ours.is_zero());
        assert_eq!(ours.to_string(), d.to_string());
    }
}
