//! `POST /payments` and `GET /payments`.

use std::str::FromStr;

use mongodb::bson::{Bson, DateTime, Decimal128, Document, RawDocumentBuf, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, IndexModel};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::page::Page;
use crate::domain::payments::{Payment, PaymentStatus, Product, payment_from_document};

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
    pub unit_price: Decimal,
    /// Units bought.
    pub quantity: u64,
}

impl NewPayment {
    /// Validates a request body `{productCode, productName, unitPrice, quantity}`.
    /// `unitPrice` may be a JSON number or a decimal string (exact: `"19.99"`).
    pub fn from_json(body: &Value) -> Result<NewPayment, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::bad_request(
                None,
                "the body must be a JSON object",
            ));
        };
        const KNOWN: [&str; 4] = ["productCode", "productName", "unitPrice", "quantity"];
        if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                Some(unknown),
                format!("unknown field `{unknown}` (expected {})", KNOWN.join(", ")),
            ));
        }
        let payment = NewPayment {
            product_code: text(fields, "productCode")?,
            product_name: text(fields, "productName")?,
            unit_price: unit_price(fields)?,
            quantity: quantity(fields)?,
        };
        payment.amount()?;
        Ok(payment)
    }

    /// unitPrice × quantity, exact.
    pub fn amount(&self) -> Result<Decimal, ApiError> {
        self.unit_price
            .checked_mul(Decimal::from(self.quantity))
            .ok_or_else(|| {
                ApiError::bad_request(Some("quantity"), "unitPrice × quantity is too large")
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

fn unit_price(fields: &Map<String, Value>) -> Result<Decimal, ApiError> {
    let bad = |why: &str| ApiError::bad_request(Some("unitPrice"), format!("`unitPrice` {why}"));
    let text = match required(fields, "unitPrice")? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(bad("must be a number or a decimal string")),
    };
    let price = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| bad(&format!("`{text}` is not a decimal number")))?;
    if price <= Decimal::ZERO {
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
        let decimal = Decimal128::from_str(&amount.to_string())
            .map_err(|_| ApiError::bad_request(Some("unitPrice"), "amount is not representable"))?;
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
pub fn payment_json(p: &Payment) -> Value {
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
        NewPayment::from_json(&body).map_err(|e| format!("{e:?}"))
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
