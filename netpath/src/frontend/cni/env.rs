//! The `CNI_*` environment variables a CNI runtime sets for the plugin: the command and the
//! container it is about, parsed at the edge.
use super::reply::{CniError, code};
use crate::{
    error::Field,
    types::name::{Hostname, Naming, ifname_problem},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_COMMAND '{s}' is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
                ));
            }
        })
    }
}

/// The container a command is about: `CNI_CONTAINERID`, `CNI_IFNAME` and `CNI_NETNS`, and
/// the name `CNI_ARGS` gives it.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// Absent for DEL of a container whose namespace is gone.
    pub netns: Option<String>,
    /// `K8S_POD_NAME`: Kubernetes runtimes pass the pod's name, Podman the container's.
    pub pod_name: Option<String>,
}

impl Attachment {
    /// Reads the variables a command needs; `need_netns` for ADD and CHECK.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, need_netns: bool) -> Result<Self, CniError> {
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| CniError::new(code::INVALID_ENV, format!("{name} is not set; the runtime must pass it")))
        };
        let container_id = required("CNI_CONTAINERID")?;
        // The spec's alphabet for container ids; the id becomes part of netpath's endpoint id.
        let valid = container_id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && container_id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && container_id.len() <= 100;
        if !valid {
            return Err(CniError::new(
                code::INVALID_ENV,
                "CNI_CONTAINERID must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit",
            ));
        }
        let ifname = required("CNI_IFNAME")?;
        if let Some(problem) = ifname_problem(&ifname) {
            return Err(CniError::new(code::INVALID_ENV, format!("CNI_IFNAME {problem}")));
        }
        let netns = if need_netns { Some(required("CNI_NETNS")?) } else { var("CNI_NETNS").filter(|v| !v.is_empty()) };
        let pod_name = var("CNI_ARGS").and_then(|args| cni_arg(&args, "K8S_POD_NAME"));
        Ok(Self { container_id, ifname, netns, pod_name })
    }

    /// The name the container answers to on its network: the pod's, when it is a host name,
    /// derived (left out when taken: pods of one name in two Kubernetes namespaces may share
    /// a network). One that is no host name is left out, not refused: Podman's generated
    /// names (`eager_tesla`) have underscores, and a container must not fail to start for a
    /// name it did not choose.
    pub fn name(&self) -> Option<Naming> {
        self.pod_name.as_deref().and_then(|name| Hostname::parse(Field::Name, name).ok()).map(Naming::Derived)
    }

    /// netpath's endpoint id for this attachment: one container may have several interfaces.
    pub fn endpoint_id(&self) -> String {
        endpoint_id(&self.container_id, &self.ifname)
    }
}

pub fn endpoint_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

/// One value of `CNI_ARGS` (`K1=V1;K2=V2`), when set and not empty.
fn cni_arg(args: &str, name: &str) -> Option<String> {
    args.split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_name_the_container_and_its_interface() {
        let at = Attachment { container_id: "abc".into(), ifname: "eth1".into(), netns: None, pod_name: None };
        assert_eq!(at.endpoint_id(), "abc-eth1");
        let env = |name: &str| match name {
            "CNI_CONTAINERID" => Some("abc".to_string()),
            "CNI_IFNAME" => Some("eth0".to_string()),
            _ => None,
        };
        assert!(Attachment::from_env(env, false).is_ok());
        assert_eq!(Attachment::from_env(env, true).unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn the_name_comes_from_cni_args_when_it_is_a_host_name() {
        let env = |args: &'static str| {
            move |name: &str| match name {
                "CNI_CONTAINERID" => Some("abc".to_string()),
                "CNI_IFNAME" => Some("eth0".to_string()),
                "CNI_ARGS" => Some(args.to_string()),
                _ => None,
            }
        };
        let name = |args| Attachment::from_env(env(args), false).unwrap().name().map(|n| n.hostname().to_string());
        assert_eq!(name("IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=web"), Some("web".into()));
        assert_eq!(name("K8S_POD_NAME=Web.front"), Some("Web.front".into()));
        assert_eq!(name("K8S_POD_NAME="), None);
        assert_eq!(name("IgnoreUnknown=1"), None);
        assert_eq!(name("K8S_POD_NAME=eager_tesla"), None, "Podman's generated names are left out");
    }
}
