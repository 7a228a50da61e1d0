//! The vim25 view of a task: its TaskInfo.
use super::record::{time, Kept, TaskRecord};
use vmodl::{types, Data, MoRef, TypeId, Value};

impl TaskRecord {
    /// The vim25 TaskInfo of a task.
    pub fn vim_info(&self) -> Data {
        let t = self;
        let task = MoRef::new(types::Task, t.key.clone());
        let mut d = Data::new(types::TaskInfo)
            .with("key", t.key.clone())
            .with("task", task)
            .with("descriptionId", t.description_id.clone())
            .with("state", Value::enum_value(types::TaskInfoState, t.state.as_str()))
            .with("cancelled", t.cancelled)
            .with("cancelable", t.cancelable)
            .with("reason", Data::new(types::TaskReasonUser).with("userName", t.user.clone()))
            .with("queueTime", time(t.queue_time))
            .with("eventChainId", t.event_chain_id)
            .with_opt("name", t.name.clone().map(|n| Value::Typed(types::MethodName, n)))
            .with_opt("entityName", t.entity_name.clone())
            .with_opt("progress", t.progress)
            .with_opt("startTime", t.start_time.map(time))
            .with_opt("completeTime", t.complete_time.map(time))
            .with_opt("changeTag", t.change_tag.clone())
            .with_opt("parentTaskKey", t.parent_key.clone())
            .with_opt("rootTaskKey", t.root_key.clone())
            .with_opt("activationId", t.activation_id.clone());
        if let Some((ty, moid)) = &t.entity {
            if let Some(ty) = TypeId::by_name(ty) {
                d.set("entity", MoRef::new(ty, moid.clone()));
            }
        }
        if let Some(Kept(v)) = &t.description {
            d.set("description", v.clone());
        }
        if let Some(Kept(v)) = &t.result {
            d.set("result", v.clone());
        }
        if let Some(Kept(Value::Data(fault))) = &t.error {
            // SOAP carries a LocalizedMethodFault here; VI/JSON flattens it.
            d.set(
                "error",
                Data::new(types::LocalizedMethodFault)
                    .with("fault", Value::Data(fault.clone()))
                    .with_opt("localizedMessage", t.error_message.clone()),
            );
        }
        d
    }
}
