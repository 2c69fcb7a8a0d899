//! The providers of a deployment: one client per [`ProviderName`], each behind the shared limits, built from
//! config in one place, and the routing of models to providers.

use std::{collections::HashMap, sync::Arc, time::Duration};

use gantry_core::{
    config::{ProviderConfig, Routes},
    Config, StartError, Store,
};

use crate::{
    limited::Limited, GrsaiClient, GrsaiConfig, Model, Provider, ProviderName, SeedanceClient, SeedanceConfig,
};

/// Every provider of the deployment, by name, and the model routes; cheap to clone.
#[derive(Clone)]
pub struct Providers {
    clients: HashMap<ProviderName, Arc<dyn Provider>>,
    routes: Routes,
}

impl Providers {
    /// Builds a client for every provider of `config`, each limited through `store`.
    pub fn from_config(config: &Config, store: &Store) -> Result<Self, StartError> {
        let p = &config.provider;
        let mut clients = HashMap::new();
        for &name in ProviderName::ALL {
            let (inner, timeout_ms) =
                client(name, p).map_err(|e| StartError::Provider(format!("{name}: {e}")))?;
            let limits = p.limits.of(name).clone();
            let limited: Arc<dyn Provider> =
                Arc::new(Limited::new(inner, store.clone(), limits, timeout_ms + 5_000));
            clients.insert(name, limited);
        }
        Ok(Self {
            clients,
            routes: p.routes.clone(),
        })
    }

    /// The provider that serves `model`.
    pub fn for_model(&self, model: Model) -> Option<Arc<dyn Provider>> {
        self.get(self.routes.provider_for(model))
    }

    /// The provider called `name`.
    pub fn get(&self, name: ProviderName) -> Option<Arc<dyn Provider>> {
        self.clients.get(&name).cloned()
    }

    /// Each provider's cluster-wide limit on requests in flight, for the limit gauge.
    pub fn in_flight_limits(config: &Config) -> Vec<(&'static str, u32)> {
        ProviderName::ALL
            .iter()
            .map(|&name| (name.as_str(), config.provider.limits.of(name).max_in_flight))
            .collect()
    }
}

/// The client of provider `name` from its config section, with its call timeout (ms).
fn client(name: ProviderName, p: &ProviderConfig) -> crate::Result<(Arc<dyn Provider>, u64)> {
    Ok(match name {
        ProviderName::Grsai => {
            let client = GrsaiClient::new(GrsaiConfig {
                base_url: p.grsai.base_url.clone(),
                api_key: p.grsai.api_key.expose().to_owned().into(),
                timeout: Duration::from_millis(p.grsai.timeout_ms),
                h2c: p.grsai.h2c,
            })?;
            (Arc::new(client), p.grsai.timeout_ms)
        }
        ProviderName::Seedance => {
            let client = SeedanceClient::new(SeedanceConfig {
                base_url: p.seedance.base_url.clone(),
                api_key: p.seedance.api_key.expose().to_owned().into(),
                timeout: Duration::from_millis(p.seedance.timeout_ms),
                h2c: p.seedance.h2c,
                model: p.seedance.model.clone(),
            })?;
            (Arc::new(client), p.seedance.timeout_ms)
        }
    })
}
