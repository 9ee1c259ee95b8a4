//! Extractors whose rejection is the API's error: the cluster a request is
//! about, a JSON body and query parameters. Handlers take these instead of
//! mapping axum's rejections one by one.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::{Json, RequestPartsExt};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::monitor::ClusterHandle;

/// The cluster a request is about: `{name}` of `/api/v1/clusters/{name}/...`,
/// or the default (first configured) cluster on `/api/v1/cluster/...`. One
/// handler serves both routes.
#[derive(Debug, Clone)]
pub struct Cluster(pub ClusterHandle);

impl FromRequestParts<AppState> for Cluster {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The default-cluster routes have no path parameters at all.
        let named = parts
            .extract::<Path<HashMap<String, String>>>()
            .await
            .ok()
            .and_then(|Path(mut p)| p.remove("name"));
        let handle = match named {
            Some(name) => state.cluster(&name)?,
            None => state.default_cluster()?,
        };
        Ok(Cluster(handle.clone()))
    }
}

/// A JSON request body; a body that does not parse is a 400, one that
/// parses into the wrong shape a 422, both naming what is wrong.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::unprocessable(format!(
                "bad request body: {}",
                e.body_text()
            ))),
            Err(other) => Err(ApiError::bad_request(format!(
                "bad request body: {}",
                other.body_text()
            ))),
        }
    }
}

/// Query parameters; a 400 naming what is wrong with them.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("bad query parameters: {}", e.body_text()))
            })
    }
}
