//! Kubernetes quantities (`64Ki`, `1.5Gi`, `1e5`), for CEL's `quantity()`: read exactly, as
//! `resource.ParseQuantity` reads them, so that the CRD's bounds are exact.

use std::cmp::Ordering;

pub(super) const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
pub(super) const QUANTITY_SUFFIX_ERROR: &str = "unable to parse quantity's suffix";

/// `±digits × 10^exp10 × 2^exp2`, read the way `resource.ParseQuantity` reads a string.
#[derive(Debug, PartialEq)]
pub(super) struct Quantity {
    pub(super) negative: bool,
    /// Decimal digits, most significant first, without leading zeros (empty for zero).
    pub(super) digits: Vec<u8>,
    pub(super) exp10: i64,
    pub(super) exp2: u32,
}

impl Quantity {
    pub(super) fn parse(s: &str) -> Result<Quantity, &'static str> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(QUANTITY_FORMAT_ERROR);
        }
        let mut i = 0;
        let negative = match b[0] {
            b'-' => {
                i = 1;
                true
            }
            b'+' => {
                i = 1;
                false
            }
            _ => false,
        };
        let digits_len = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let int_part = &b[i..i + digits_len(i)];
        i += int_part.len();
        let mut frac_part: &[u8] = &[];
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac_part = &b[i..i + digits_len(i)];
            i += frac_part.len();
        }
        // The suffix: letters of "eEinumkKMGTP", an optional sign, digits, and nothing else.
        let suffix_start = i;
        i += b[i..].iter().take_while(|c| b"eEinumkKMGTP".contains(c)).count();
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        i += digits_len(i);
        if i != b.len() {
            return Err(QUANTITY_FORMAT_ERROR);
        }
        let (exp10, exp2): (i64, u32) = match &s[suffix_start..] {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            other => match other.strip_prefix(['e', 'E']).map(str::parse::<i64>) {
                Some(Ok(e)) => (e, 0),
                _ => return Err(QUANTITY_SUFFIX_ERROR),
            },
        };
        let digits: Vec<u8> = int_part
            .iter()
            .chain(frac_part)
            .map(|d| d - b'0')
            .skip_while(|d| *d == 0)
            .collect();
        let exp10 = exp10.saturating_sub(frac_part.len() as i64);
        Ok(Quantity {
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// The whole value, rounded up as `resource.Quantity.Value()` rounds (kgateway reads window
    /// sizes so: `64Ki` -> 65536, `1.5k` -> 1500); None past 128 bits.
    pub(super) fn value(&self) -> Option<i128> {
        let mut n: u128 = 0;
        for d in &self.digits {
            n = n.checked_mul(10)?.checked_add(u128::from(*d))?;
        }
        n = n.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let ten_to = |e: i64| 10u128.checked_pow(u32::try_from(e).ok()?);
        let whole = if self.exp10 >= 0 {
            n.checked_mul(ten_to(self.exp10)?)?
        } else {
            match ten_to(-self.exp10) {
                Some(d) => n.div_ceil(d),
                // More fraction digits than a u128 holds: below one, rounded up.
                None => u128::from(n > 0),
            }
        };
        let whole = i128::try_from(whole).ok()?;
        Some(if self.negative { -whole } else { whole })
    }

    /// `isGreaterThan(quantity('<n>'))`.
    pub(super) fn is_greater_than(&self, n: u64) -> bool {
        // Rounding up to the nanounit, as ParseQuantity does, cannot cross an integer.
        !self.negative && self.cmp_nanounits(u128::from(n) * 1_000_000_000) == Ordering::Greater
    }

    /// `isLessThan(quantity('<n>'))`, n > 0: ParseQuantity rounds a positive value up to
    /// the next nanounit, so `2147483647.9999999999` is not less than 2147483648.
    pub(super) fn is_less_than(&self, n: u64) -> bool {
        self.negative
            || self.digits.is_empty()
            || self.cmp_nanounits(u128::from(n) * 1_000_000_000 - 1) != Ordering::Greater
    }

    /// Compares |self| × 10^9 with `k`, exactly.
    fn cmp_nanounits(&self, k: u128) -> Ordering {
        if self.digits.is_empty() {
            return 0.cmp(&k);
        }
        let e = self.exp10.saturating_add(9);
        // The leading digit's power of ten: the value is in [10^lead, 10^(lead+1) × 2^60).
        let lead = (self.digits.len() as i64 - 1).saturating_add(e);
        if lead > 40 {
            return Ordering::Greater; // beyond any u128
        }
        if lead < -20 {
            return if k == 0 { Ordering::Greater } else { Ordering::Less }; // below 1
        }
        let mut left = self.digits.clone();
        left.resize(left.len() + e.max(0) as usize, 0);
        for _ in 0..self.exp2 {
            double_decimal(&mut left);
        }
        let mut right: Vec<u8> = k.to_string().bytes().map(|d| d - b'0').collect();
        right.resize(right.len() + (-e).max(0) as usize, 0);
        cmp_decimal(&left, &right)
    }
}

fn double_decimal(digits: &mut Vec<u8>) {
    let mut carry = 0;
    for d in digits.iter_mut().rev() {
        let v = *d * 2 + carry;
        *d = v % 10;
        carry = v / 10;
    }
    if carry > 0 {
        digits.insert(0, carry);
    }
}

fn cmp_decimal(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |x: &[u8]| x.iter().position(|d| *d != 0).map_or(0, |p| x.len() - p);
    let (la, lb) = (strip(a), strip(b));
    la.cmp(&lb)
        .then_with(|| a[a.len() - la..].cmp(&b[b.len() - lb..]))
}
