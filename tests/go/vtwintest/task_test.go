package vtwintest

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
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

// govmomi's task.Wait on a Rename_Task that a test-control rule fails after
// it started (vcsim can only fail calls synchronously).
func TestTaskWaitOnTaskFailedByTestControl(t *testing.T) {
	ctx := context.Background()
	c, err := connect(t, ctx, nil)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer c.Logout(ctx)
	u, _ := soap.ParseURL(os.Getenv("VTWIN_URL"))
	pw, _ := u.User.Password()
	rule := `{"method":"Rename_Task","object":"datacenter-2","mode":"task","delay_ms":300,"count":1,` +
		`"fault":{"_typeName":"InvalidName","name":"bad"}}`
	req, _ := http.NewRequest("POST", "http://"+u.Host+"/admin/faults", strings.NewReader(rule))
	req.SetBasicAuth(u.User.Username(), pw)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("adding the rule: %v %v", err, resp)
	}
	resp.Body.Close()

	dc := object.NewCommon(c.Client, types.ManagedObjectReference{Type: "Datacenter", Value: "datacenter-2"})
	tk, err := dc.Rename(ctx, "Rome")
	if err != nil {
		t.Fatalf("Rename_Task: %v", err)
	}
	err = tk.Wait(ctx)
	terr, isTaskErr := err.(task.Error)
	if !isTaskErr {
		t.Fatalf("want a task.Error, got %#v", err)
	}
	if f, ok := terr.Fault().(*types.InvalidName); !ok || f.Name != "bad" {
		t.Fatalf("fault %#v", terr.Fault())
	}
	// The rule is spent: a rename back to the same name succeeds.
	tk, err = dc.Rename(ctx, "DC0")
	if err != nil {
		t.Fatalf("Rename_Task: %v", err)
	}
	if err := tk.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}
