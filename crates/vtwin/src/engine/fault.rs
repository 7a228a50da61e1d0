//! Typed vim25 faults. A `Fault` is a MethodFault data object (every type
//! named here comes from the generated model) plus its message text.
use vmodl::{types, Data, MoRef, TypeId, Value};

#[derive(Clone, Debug)]
pub struct Fault {
    pub data: Data,
    pub message: String,
}

impl Fault {
    /// A fault of type `ty` with `message` in faultMessage (so VI/JSON
    /// clients, which have no faultstring, see the text too).
    pub fn new(ty: TypeId, message: impl Into<String>) -> Fault {
        debug_assert!(ty.is_fault(), "{} is not a fault type", ty.name());
        let message = message.into();
        let msg = Data::new(types::LocalizableMessage)
            .with("key", format!("com.vmware.vtwin.fault.{}", ty.name()))
            .with("message", message.clone());
        let data = Data::new(ty).with("faultMessage", Value::Array(types::LocalizableMessage, vec![msg.into()]));
        Fault { data, message }
    }
    pub fn with(mut self, name: &str, v: impl Into<Value>) -> Fault {
        self.data.set(name, v);
        self
    }
    pub fn type_name(&self) -> &'static str {
        self.data.ty.name()
    }

    pub fn not_authenticated() -> Fault {
        Fault::new(types::NotAuthenticated, "The session is not authenticated.")
    }
    pub fn invalid_login() -> Fault {
        Fault::new(types::InvalidLogin, "Cannot complete login due to an incorrect user name or password.")
    }
    pub fn no_permission(obj: &MoRef, privilege: &str) -> Fault {
        Fault::new(
            types::NoPermission,
            format!("Permission to perform this operation was denied: {privilege} on {}:{}", obj.ty.name(), obj.value),
        )
        .with("object", obj.clone())
        .with("privilegeId", privilege)
    }
    pub fn not_found(obj: &MoRef) -> Fault {
        Fault::new(
            types::ManagedObjectNotFound,
            format!(
                "The object '{}:{}' has already been deleted or has not been completely created",
                obj.ty.name(),
                obj.value
            ),
        )
        .with("obj", obj.clone())
    }
    pub fn method_not_found(receiver: &MoRef, method: &str) -> Fault {
        Fault::new(types::MethodNotFound, format!("Method {method} not found on {}", receiver.ty.name()))
            .with("receiver", receiver.clone())
            .with("method", method)
    }
    pub fn invalid_request(message: impl Into<String>) -> Fault {
        Fault::new(types::InvalidRequest, message)
    }
    /// A per-user cap reached (LimitExceeded naming what and how many).
    pub fn limit_exceeded(property: &str, limit: usize, message: impl Into<String>) -> Fault {
        Fault::new(types::LimitExceeded, message)
            .with("property", Value::Typed(types::PropertyPath, property.into()))
            .with("limit", limit.min(i32::MAX as usize) as i32)
    }
    pub fn invalid_argument(property: &str, message: impl Into<String>) -> Fault {
        let f = Fault::new(types::InvalidArgument, message);
        if property.is_empty() {
            f
        } else {
            f.with("invalidProperty", Value::Typed(types::PropertyPath, property.into()))
        }
    }
    pub fn invalid_property(name: &str) -> Fault {
        Fault::new(types::InvalidProperty, format!("Property '{name}' is not valid"))
            .with("name", Value::Typed(types::PropertyPath, name.into()))
    }
    pub fn invalid_type(argument: &str, message: impl Into<String>) -> Fault {
        Fault::new(types::InvalidType, message).with("argument", Value::Typed(types::PropertyPath, argument.into()))
    }
    pub fn not_supported(message: impl Into<String>) -> Fault {
        Fault::new(types::NotSupported, message)
    }
    pub fn plain_not_found(message: impl Into<String>) -> Fault {
        Fault::new(types::NotFound, message)
    }
    pub fn system_error(reason: impl Into<String>) -> Fault {
        let reason = reason.into();
        Fault::new(types::SystemError, format!("A general system error occurred: {reason}")).with("reason", reason)
    }
    pub fn already_exists(name: &str) -> Fault {
        Fault::new(types::AlreadyExists, format!("The specified key, name, or identifier '{name}' already exists."))
            .with("name", name)
    }
    pub fn user_not_found(principal: &str) -> Fault {
        Fault::new(types::UserNotFound, format!("User or group '{principal}' not found"))
            .with("principal", principal)
            .with("unresolved", false)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.data.ty.name())
    }
}

impl std::error::Error for Fault {}

/// A disk engine error is a FileFault naming the file (when there is one).
impl From<vdisk::Error> for Fault {
    fn from(e: vdisk::Error) -> Fault {
        let file = match &e {
            vdisk::Error::Io { path, .. } | vdisk::Error::Format { path, .. } => path.clone(),
            vdisk::Error::OutOfRange { .. } => String::new(),
        };
        Fault::new(types::FileFault, e.to_string()).with("file", file)
    }
}

impl From<crate::store::StoreError> for Fault {
    fn from(e: crate::store::StoreError) -> Fault {
        Fault::system_error(e.to_string())
    }
}
