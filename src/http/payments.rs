//! `POST /payments` and `GET /payments`.

use std::collections::BTreeMap;

use crate::domain::money::{Amount, MAX_DIGITS};
use mongodb::bson::{Bson, DateTime, Document, RawDocumentBuf, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, IndexModel};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::page::Page;
use crate::decode::payments::payment_from_document;
use crate::domain::payments::{Payment, PaymentStatus, Product};

/// Longest product code or name accepted.
const MAX_TEXT: usize = 200;
/// Largest quantity accepted.
const MAX_QUANTITY: u64 = 1_000_000;

/// A validated `POST /payments` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayment {
    /// Product code.
    pub product_code: String,
    /// Product name.
    pub product_name: String,
    /// Price of one unit.
    pub unit_price: Amount,
    /// Units bought.
    pub quantity: u64,
}

impl NewPayment {
    /// Validates a request body `{productCode, productName, unitPrice, quantity}`.
    /// `unitPrice` may be a JSON number or a decimal string (`"19.99"`); either is taken
    /// digit for digit, and one that a Decimal128 (34 significant digits) cannot hold
    /// exactly is refused rather than rounded.
    pub fn from_json_text(body: &str) -> Result<NewPayment, ApiError> {
        let not_object = || ApiError::bad_request(None, "the body must be a JSON object");
        // Raw values: a number's digits as sent, before any rounding to a float.
        let raw: BTreeMap<String, &RawValue> =
            serde_json::from_str(body).map_err(|_| not_object())?;
        const KNOWN: [&str; 4] = ["productCode", "productName", "unitPrice", "quantity"];
        if let Some(unknown) = raw.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                Some(unknown),
                format!("unknown field `{unknown}` (expected {})", KNOWN.join(", ")),
            ));
        }
        let mut fields = Map::new();
        for (name, value) in &raw {
            let value: Value = serde_json::from_str(value.get()).map_err(|_| {
                ApiError::bad_request(Some(name), format!("`{name}` is not a JSON value"))
            })?;
            fields.insert(name.clone(), value);
        }
        let payment = NewPayment {
            product_code: text(&fields, "productCode")?,
            product_name: text(&fields, "productName")?,
            unit_price: unit_price(raw.get("unitPrice").copied())?,
            quantity: quantity(&fields)?,
        };
        payment.amount()?;
        Ok(payment)
    }

    /// unitPrice × quantity, exact (refused when the product needs more than 34
    /// significant digits, instead of rounded).
    pub fn amount(&self) -> Result<Amount, ApiError> {
        self.unit_price.checked_mul(self.quantity).map_err(|_| {
            ApiError::bad_request(
                Some("quantity"),
                format!(
                    "unitPrice × quantity needs more than {MAX_DIGITS} significant digits (it \
                     would be rounded)"
                ),
            )
        })
    }
}

fn required<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a Value, ApiError> {
    fields
        .get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::bad_request(Some(name), format!("`{name}` is required")))
}

fn text(fields: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    let Value::String(s) = required(fields, name)? else {
        return Err(ApiError::bad_request(
            Some(name),
            format!("`{name}` must be a string"),
        ));
    };
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_TEXT {
        return Err(ApiError::bad_request(
            Some(name),
            format!("`{name}` must be 1 to {MAX_TEXT} characters"),
        ));
    }
    Ok(s.to_owned())
}

fn unit_price(raw: Option<&RawValue>) -> Result<Amount, ApiError> {
    let bad = |why: &str| ApiError::bad_request(Some("unitPrice"), format!("`unitPrice` {why}"));
    let raw = raw.map(RawValue::get).map(str::trim);
    let text = match raw {
        None | Some("null") => {
            return Err(ApiError::bad_request(
                Some("unitPrice"),
                "`unitPrice` is required",
            ));
        }
        Some(r) if r.starts_with('"') => serde_json::from_str::<String>(r)
            .map_err(|_| bad("is not a valid JSON string"))?
            .trim()
            .to_owned(),
        Some(r) if r.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => r.to_owned(),
        Some(_) => return Err(bad("must be a number or a decimal string")),
    };
    let price: Amount = text
        .parse()
        .map_err(|why| bad(&format!("`{text}` {why}")))?;
    if price.is_negative() || price.is_zero() {
        return Err(bad("must be greater than 0"));
    }
    Ok(price)
}

fn quantity(fields: &Map<String, Value>) -> Result<u64, ApiError> {
    match required(fields, "quantity")?.as_u64() {
        Some(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(q),
        _ => Err(ApiError::bad_request(
            Some("quantity"),
            format!("`quantity` must be a whole number from 1 to {MAX_QUANTITY}"),
        )),
    }
}

/// Reads and writes the payments collection.
#[derive(Debug, Clone)]
pub struct PaymentsApi {
    collection: Collection<Document>,
}

impl PaymentsApi {
    /// Over `collection`.
    pub fn new(collection: Collection<Document>) -> PaymentsApi {
        PaymentsApi { collection }
    }

    /// The collection.
    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    /// The index the listing sorts by (idempotent).
    pub async fn ensure_indexes(&self) -> Result<(), mongodb::error::Error> {
        self.collection
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"created_at": -1, "_id": 1})
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Inserts a PENDING payment (majority write) and returns it.
    pub async fn create(&self, new: &NewPayment) -> Result<Payment, ApiError> {
        let amount = new.amount()?;
        let payment = Payment {
            id: mongodb::bson::Uuid::new().to_string(),
            amount,
            status: PaymentStatus::Pending,
            product: Product {
                code: new.product_code.clone(),
                name: new.product_name.clone(),
            },
        };
        let decimal = amount.to_decimal128();
        self.collection
            .insert_one(doc! {
                "_id": &payment.id,
                "amount": decimal,
                "status": payment.status.as_str(),
                "product": {"code": &payment.product.code, "name": &payment.product.name},
                "created_at": DateTime::now(),
            })
            .write_concern(WriteConcern::majority())
            .await
            .map_err(ApiError::database)?;
        Ok(payment)
    }

    /// One page of payments, newest first; documents that are not valid payments are
    /// shown with the reason instead of being hidden.
    pub async fn list(&self, page: Page) -> Result<Value, ApiError> {
        let raw = self.collection.clone_with_type::<RawDocumentBuf>();
        let (docs, total) = page.fetch(&raw, doc! {"created_at": -1, "_id": 1}).await?;
        let items: Vec<Value> = docs
            .iter()
            .map(|doc| match payment_from_document(doc) {
                Ok(p) => payment_json(&p),
                Err(e) => json!({
                    "id": doc.get("_id").ok().flatten().map(|id| to_relaxed_json_value(id.to_raw_bson())),
                    "invalid": e.to_string(),
                }),
            })
            .collect();
        Ok(json!({"page": page.page, "size": page.size, "total": total, "items": items}))
    }
}

fn to_relaxed_json_value(value: mongodb::bson::RawBson) -> Value {
    match Bson::try_from(value) {
        Ok(b) => b.into_relaxed_extjson(),
        Err(_) => Value::Null,
    }
}

/// A payment as the API shows it: amounts as decimal strings, never floats.
pub(crate) fn payment_json(p: &Payment) -> Value {
    json!({
        "id": p.id,
        "amount": p.amount.to_string(),
        "status": p.status.as_str(),
        "product": {"code": p.product.code, "name": p.product.name},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<NewPayment, String> {
        parse_text(&body.to_string())
    }

    fn parse_text(body: &str) -> Result<NewPayment, String> {
        NewPayment::from_json_text(body).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn prices_are_taken_digit_for_digit_and_never_rounded() {
        let body = |price: &str| {
            format!(
                r#"{{"productCode": "p1", "productName": "Pen", "unitPrice": {price}, "quantity": 1}}"#
            )
        };
        // 40 decimals: once rounded silently to 28.
        let forty = "0.1234567890123456789012345678901234567890";
        for price in [forty.to_owned(), format!("\"{forty}\"")] {
            let err = parse_text(&body(&price)).unwrap_err();
            assert!(
                err.contains("unitPrice") && err.contains("rounded"),
                "{price}: {err}"
            );
        }
        let err = parse_text(&body("12345678901234567890123456789012345")).unwrap_err();
        assert!(err.contains("35 significant digits"), "{err}");
        // Up to 34 significant digits, as a Decimal128 holds: once refused past 28.
        for (price, exact) in [
            ("19.99", "19.99"),
            ("1.5e3", "1.5E+3"),
            ("\"2.5E-2\"", "0.025"),
            (
                "1.000000000000000000000000000000001",
                "1.000000000000000000000000000000001",
            ),
            (
                "\"1234567890123456789012345678.901234\"",
                "1234567890123456789012345678.901234",
            ),
            (
                "0.1234567890123456789012345678",
                "0.1234567890123456789012345678",
            ),
        ] {
            let p = parse_text(&body(price)).unwrap_or_else(|e| panic!("{price}: {e}"));
            assert_eq!(p.unit_price.to_string(), exact, "{price}");
        }
        for (price, as_written) in [
            ("\"2.50\"", "2.50"),
            ("2.50", "2.50"),
            ("\"1.000\"", "1.000"),
        ] {
            let p = parse_text(&body(price)).unwrap_or_else(|e| panic!("{price}: {e}"));
            assert_eq!(p.unit_price.to_string(), as_written, "the scale as written");
        }
        for bad in [
            "\"1.2.3\"",
            "\"1e\"",
            "\".\"",
            "\"--1\"",
            "\"1e99999999999999999999\"",
            "\"1E+6112\"",
            "\"0.10000000000000000000000000000000000\"",
        ] {
            assert!(parse_text(&body(bad)).is_err(), "{bad}");
        }
        // The product must be exact too.
        let big = r#"{"productCode": "p1", "productName": "Pen", "unitPrice": "9999999999999999999999.999999999999", "quantity": 1000000}"#;
        let err = parse_text(big).unwrap_err();
        assert!(
            err.contains("34 significant digits") && err.contains("quantity"),
            "{err}"
        );
    }

    #[test]
    fn valid_body_gives_an_exact_amount() {
        let p = parse(
            json!({"productCode": "p1", "productName": "Pen", "unitPrice": 19.99, "quantity": 3}),
        )
        .unwrap();
        assert_eq!(p.amount().unwrap().to_string(), "59.97");
        let p = parse(
            json!({"productCode": "p1", "productName": "Pen", "unitPrice": "0.1", "quantity": 3}),
        )
        .unwrap();
        assert_eq!(p.amount().unwrap().to_string(), "0.3");
    }

    #[test]
    fn invalid_bodies_name_the_field() {
        let ok = json!({"productCode": "p1", "productName": "Pen", "unitPrice": 2, "quantity": 1});
        let cases = [
            ("productCode", json!(null)),
            ("productCode", json!("")),
            ("productName", json!(5)),
            ("unitPrice", json!("abc")),
            ("unitPrice", json!(-1)),
            ("unitPrice", json!(0)),
            ("unitPrice", json!([1])),
            ("quantity", json!(0)),
            ("quantity", json!(1.5)),
            ("quantity", json!("2")),
        ];
        for (field, value) in cases {
            let mut body = ok.clone();
            body[field] = value.clone();
            let err = parse(body).unwrap_err();
            assert!(err.contains(field), "{field}={value}: {err}");
        }
        assert!(parse(json!({"productCode": "p1", "productName": "Pen", "unitPrice": 2, "quantity": 1, "extra": 1})).unwrap_err().contains("extra"));
        assert!(parse(json!([1])).is_err());
    }
}
