//! The `packages` collection: `{_id: <package id>, size, weight, tag}`.

use std::future::IntoFuture;

use async_trait::async_trait;
use dronedelivery_actors::domain::{Package, PackagePatch, PackageSize, Upserted};
use dronedelivery_actors::ports::{PackageStore, StoreResult};
use mongodb::bson::{doc, to_bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::{collection, encode_error, ping, retry_upsert, store_error, PACKAGES};

/// A package as stored: the original Package service's document.
#[derive(Debug, Serialize, Deserialize)]
struct PackageDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    size: Option<PackageSize>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    tag: Option<String>,
}

impl From<PackageDoc> for Package {
    fn from(d: PackageDoc) -> Self {
        Self {
            id: d.id,
            size: d.size,
            weight: d.weight,
            tag: d.tag,
        }
    }
}

/// Packages in the `packages` collection, with an atomic upsert (see the
/// [module docs](super)).
#[derive(Debug, Clone)]
pub struct MongoPackageStore {
    db: Database,
    packages: Collection<PackageDoc>,
}

impl MongoPackageStore {
    /// The store on `db` (indexes are made by [`super::connect`]).
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            packages: collection(db, PACKAGES),
        }
    }
}

/// `$set` of the fields present in `patch`.
fn patch_fields(patch: &PackagePatch) -> StoreResult<Document> {
    let mut set = Document::new();
    if let Some(size) = patch.size {
        set.insert(
            "size",
            to_bson(&size).map_err(|e| encode_error("packages.patch", e))?,
        );
    }
    if let Some(weight) = patch.weight {
        set.insert("weight", weight);
    }
    if let Some(tag) = &patch.tag {
        set.insert("tag", tag.clone());
    }
    Ok(set)
}

#[async_trait]
impl PackageStore for MongoPackageStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Package>> {
        self.packages
            .find_one(doc! { "_id": id })
            .await
            .map(|d| d.map(Package::from))
            .map_err(|e| store_error("packages.get", e))
    }

    async fn upsert(&self, package: &Package) -> StoreResult<Upserted> {
        // Every field is set, absent ones to null: a PUT replaces the package,
        // and one with no fields still inserts the document.
        let size = to_bson(&package.size).map_err(|e| encode_error("packages.upsert", e))?;
        let filter = doc! { "_id": &package.id };
        let update = doc! {
            "$set": { "size": size, "weight": package.weight, "tag": package.tag.clone() }
        };
        let result = retry_upsert("packages.upsert", || {
            self.packages
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .into_future()
        })
        .await?;
        Ok(if result.upserted_id.is_some() {
            Upserted::Created
        } else {
            Upserted::Updated
        })
    }

    async fn patch(&self, id: &str, patch: &PackagePatch) -> StoreResult<Option<Package>> {
        let set = patch_fields(patch)?;
        if set.is_empty() {
            // An empty `$set` is an error in MongoDB; nothing changes anyway.
            return self.get(id).await;
        }
        self.packages
            .find_one_and_update(doc! { "_id": id }, doc! { "$set": set })
            .return_document(ReturnDocument::After)
            .await
            .map(|d| d.map(Package::from))
            .map_err(|e| store_error("packages.patch", e))
    }

    async fn ping(&self) -> StoreResult<()> {
        ping(&self.db).await
    }
}
