package vtwintest

import (
	"context"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// govmomi's task.Wait (CreatePropertyCollector, CreateFilter, WaitForUpdatesEx)
// on an extension task driven through SetTaskState.
func TestTaskWaitOnExtensionTask(t *testing.T) {
	ctx := context.Background()
	c, err := connect(t, ctx, nil)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer c.Logout(ctx)
	em := *c.ServiceContent.ExtensionManager
	_, err = methods.RegisterExtension(ctx, c.Client, &types.RegisterExtension{This: em, Extension: types.Extension{
		Key: "com.example.go", Version: "1", LastHeartbeatTime: time.Now(),
		Description: &types.Description{Label: "go", Summary: "go"},
		TaskList:    []types.ExtensionTaskTypeInfo{{TaskID: "com.example.go.job"}},
	}})
	if err != nil {
		t.Fatalf("RegisterExtension: %v", err)
	}
	create := func() types.ManagedObjectReference {
		res, err := methods.CreateTask(ctx, c.Client, &types.CreateTask{This: c.ServiceContent.TaskManager.Reference(),
			Obj: c.ServiceContent.RootFolder, TaskTypeId: "com.example.go.job", Cancelable: true})
		if err != nil {
			t.Fatalf("CreateTask: %v", err)
		}
		return res.Returnval.Task
	}
	setState := func(ref types.ManagedObjectReference, state types.TaskInfoState, fault *types.LocalizedMethodFault) {
		_, err := methods.SetTaskState(ctx, c.Client, &types.SetTaskState{This: ref, State: state, Fault: fault})
		if err != nil {
			t.Errorf("SetTaskState(%s): %v", state, err)
		}
	}

	ok := create()
	go func() {
		time.Sleep(300 * time.Millisecond)
		setState(ok, types.TaskInfoStateRunning, nil)
		time.Sleep(300 * time.Millisecond)
		setState(ok, types.TaskInfoStateSuccess, nil)
	}()
	if err := object.NewTask(c.Client, ok).Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}

	bad := create()
	go func() {
		time.Sleep(200 * time.Millisecond)
		setState(bad, types.TaskInfoStateError, &types.LocalizedMethodFault{Fault: &types.NotFound{}, LocalizedMessage: "gone"})
	}()
	err = object.NewTask(c.Client, bad).Wait(ctx)
	if err == nil {
		t.Fatal("Wait on a failed task returned no error")
	}
	terr, isTaskErr := err.(task.Error)
	if !isTaskErr {
		t.Fatalf("not a task.Error: %#v", err)
	}
	if _, nf := terr.Fault().(*types.NotFound); !nf {
		t.Fatalf("fault %#v", terr.Fault())
	}
}
