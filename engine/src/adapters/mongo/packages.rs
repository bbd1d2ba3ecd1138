//! The `packages` collection: `{_id: <package id>, size, weight, tag}`.

use async_trait::async_trait;
use dronedelivery_actors::domain::{Package, PackagePatch, PackageSize, Upserted};
use dronedelivery_actors::ports::{PackageStore, StoreResult};
use mongodb::bson::{doc, to_bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::{
    collection, encode_error, ping, store_error, upsert_batcher, upsert_statement, PACKAGES,
};
use crate::adapters::batch::{fail_all, BatchConfig, Batcher};

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

/// Packages in the `packages` collection, with an atomic upsert, batched
/// (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct MongoPackageStore {
    db: Database,
    packages: Collection<PackageDoc>,
    upserts: Batcher<Package, Upserted>,
    reads: Batcher<String, Option<Package>>,
}

impl MongoPackageStore {
    /// The store on `db` (indexes are made by [`super::connect`]), its
    /// upserts batched with the default [`BatchConfig`]. Needs a Tokio
    /// runtime.
    pub fn new(db: &Database) -> Self {
        Self::with_batching(db, BatchConfig::default())
    }

    /// The store with its upserts batched by `batch`.
    pub fn with_batching(db: &Database, batch: BatchConfig) -> Self {
        let upserts = upsert_batcher(
            db,
            PACKAGES,
            "packages.upsert",
            batch,
            upsert_of,
            |inserted| {
                if inserted {
                    Upserted::Created
                } else {
                    Upserted::Updated
                }
            },
        );
        let packages: Collection<PackageDoc> = collection(db, PACKAGES);
        let from = packages.clone();
        let reads = Batcher::spawn("packages.get", batch, move |ids: Vec<String>| {
            let packages = from.clone();
            async move { read_many(&packages, ids).await }
        });
        Self {
            db: db.clone(),
            packages,
            upserts,
            reads,
        }
    }
}

/// Reads of packages that arrive together: one `find` of `{_id: {$in:
/// ids}}`, each caller answered with its own package (or none). A read
/// changes nothing, so batching them needs no care beyond the mapping.
async fn read_many(
    packages: &Collection<PackageDoc>,
    ids: Vec<String>,
) -> Vec<StoreResult<Option<Package>>> {
    use futures::TryStreamExt;
    let found: Result<Vec<PackageDoc>, _> =
        match packages.find(doc! { "_id": { "$in": &ids } }).await {
            Ok(cursor) => cursor.try_collect().await,
            Err(e) => Err(e),
        };
    match found {
        Ok(docs) => {
            let by_id: std::collections::HashMap<String, Package> = docs
                .into_iter()
                .map(|d| (d.id.clone(), Package::from(d)))
                .collect();
            // An id asked twice in one batch gets the same package twice.
            ids.iter().map(|id| Ok(by_id.get(id).cloned())).collect()
        }
        Err(e) => fail_all(ids.len(), &store_error("packages.get", e)),
    }
}

/// The upsert statement of `package`: every field is set, absent ones to
/// null, so a PUT replaces the package, and one with no fields still
/// inserts the document.
fn upsert_of(package: &Package) -> StoreResult<Document> {
    let size = to_bson(&package.size).map_err(|e| encode_error("packages.upsert", e))?;
    Ok(upsert_statement(
        &package.id,
        doc! { "$set": { "size": size, "weight": package.weight, "tag": package.tag.clone() } },
    ))
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
        self.reads.submit(id.to_owned()).await
    }

    async fn upsert(&self, package: &Package) -> StoreResult<Upserted> {
        self.upserts.submit(package.clone()).await
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
