//! `wasi:keyvalue` store and atomics for components, on a [`StateStore`]:
//! bindings of its own and a view onto the store's table, as `nn::wit` does
//! for `wasi:nn`.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::{StateError, StateStore};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package verge:device-keyvalue;
            world keyvalue {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
            }
        ",
        world: "verge:device-keyvalue/keyvalue",
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use generated::wasi::keyvalue::{atomics, store};

/// An open bucket: its name, in the namespace of the instance's deployment.
pub struct Bucket {
    name: String,
}

/// What one instance may reach: one namespace of one store.
pub(crate) struct StateCtx {
    store: Arc<dyn StateStore>,
    namespace: String,
}

impl StateCtx {
    pub(crate) fn new(store: Arc<dyn StateStore>, namespace: &str) -> Self {
        StateCtx {
            store,
            namespace: namespace.to_string(),
        }
    }
}

/// What one store's `wasi:keyvalue` reaches: its resource table and its namespace.
pub struct KeyValueView<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) ctx: &'a StateCtx,
}

struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKeyValue>(linker, view)?;
    atomics::add_to_linker::<T, HasKeyValue>(linker, view)?;
    Ok(())
}

fn other(e: impl std::fmt::Display) -> store::Error {
    store::Error::Other(e.to_string())
}

impl From<StateError> for store::Error {
    fn from(e: StateError) -> Self {
        other(e)
    }
}

impl KeyValueView<'_> {
    /// The bucket behind a handle, and the store and namespace it lives in.
    fn bucket(&self, b: &Resource<Bucket>) -> Result<(&dyn StateStore, &str, &str), store::Error> {
        let bucket = self.table.get(b).map_err(other)?;
        Ok((
            self.ctx.store.as_ref(),
            self.ctx.namespace.as_str(),
            bucket.name.as_str(),
        ))
    }
}

impl store::Host for KeyValueView<'_> {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        // A full table is the call's resource bound, said as such.
        let max = self.table.max_capacity();
        self.table
            .push(Bucket { name: identifier })
            .map_err(|e| match e {
                wasmtime::component::ResourceTableError::Full => {
                    other(crate::limits::too_many_resources(max))
                }
                e => other(e),
            })
    }
}

impl store::HostBucket for KeyValueView<'_> {
    fn get(&mut self, b: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, store::Error> {
        let (s, ns, bucket) = self.bucket(&b)?;
        Ok(s.get(ns, bucket, &key)?)
    }

    fn set(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let (s, ns, bucket) = self.bucket(&b)?;
        Ok(s.set(ns, bucket, &key, &value)?)
    }

    fn delete(&mut self, b: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let (s, ns, bucket) = self.bucket(&b)?;
        Ok(s.delete(ns, bucket, &key)?)
    }

    fn exists(&mut self, b: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        let (s, ns, bucket) = self.bucket(&b)?;
        Ok(s.exists(ns, bucket, &key)?)
    }

    fn list_keys(
        &mut self,
        b: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let (s, ns, bucket) = self.bucket(&b)?;
        let (keys, cursor) = s.list_keys(ns, bucket, cursor.unwrap_or(0))?;
        Ok(store::KeyResponse { keys, cursor })
    }

    fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    fn increment(
        &mut self,
        b: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        let (s, ns, bucket) = self.bucket(&b)?;
        Ok(s.increment(ns, bucket, &key, delta)?)
    }
}
