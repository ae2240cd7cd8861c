//! Reads of the naming layer's Open API (`/nacos/v1/ns/...`) for `nacosctl service` and
//! `nacosctl instance`: Nacos's JSON answers, passed on as they come.

use serde_json::Value;

use super::{Client, ClientError, Req};

impl Client {
    /// A naming read: safe to ask another member after a lost connection. `what` names
    /// what was asked for in a [`ClientError::NotFound`].
    pub fn naming_read(
        &self,
        path: &'static str,
        query: Vec<(&'static str, &str)>,
        what: &str,
    ) -> Result<Value, ClientError> {
        self.call(
            &Req {
                method: "GET",
                path,
                query,
                body: None,
                idempotent: true,
                request_id: None,
                key: Some(what),
            },
            |_: &Value| true,
        )
    }
}
