"""`PlannedExecutor`: graphql-core's executor (as Strawberry configures it) running a plan.

It is Strawberry's own executor class, built per request by graphql-core's `Executor.build` (so
variable coercion and its errors are graphql-core's), with the field loop and value completion
driven by an `OperationPlan` instead of working them out per field. Each method mirrors the
graphql-core 3.3 method it replaces, step for step where the order of events shows in a response:
the same coroutines, created in the same order and gathered the same way (so concurrent resolvers
finish, and report errors, in the same order), the same error for each failure, located at the
same nodes and path, the same propagation of a null to the nearest nullable parent. graphql-core's
own methods do the rest (`build_resolve_info`, `handle_field_error`, `ensure_valid_runtime_type`,
`settle_in_background`, `build_response`), and a value the plan has no case for (an async
iterable for a list) is completed by graphql-core's `complete_value`.

What a plan saves: collecting fields, looking up field definitions, building resolve info for
fields whose resolver does not take it, and walking the type of every value to complete it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any, ClassVar, cast

from graphql import GraphQLError, GraphQLResolveInfo
from graphql.execution import ExecutionResult, ExperimentalIncrementalExecutionResults
from graphql.execution.executor import collect_iterator_awaitables, invalid_return_type_error
from graphql.execution.values import get_argument_values
from graphql.pyutils import AwaitableOrValue, Path, Undefined, inspect, is_iterable
from graphql.pyutils.gather_with_cancel import gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.execution.cache import PlanCache
from gateway.execution.plan import (
    ABSTRACT,
    BASIC,
    LEAF,
    LIST,
    NON_NULL,
    OBJECT,
    TYPENAME,
    Completion,
    OperationPlan,
    Selection,
    Step,
)

Info = GraphQLResolveInfo[Any]


class PlannedExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, running an operation from its plan when `plans` has one (see the
    module docstring); `planned_executor` makes the class for a schema's cache."""

    plans: ClassVar[PlanCache | None] = None

    def execute_operation(
        self, serially: bool | None = None
    ) -> AwaitableOrValue[ExecutionResult | ExperimentalIncrementalExecutionResults]:
        plans = self.plans
        middleware = self.middleware_manager
        if (
            plans is None
            or serially is not None  # a subscription's event
            or self.abort_signal is not None
            or (middleware is not None and middleware.middlewares)  # tracing's resolver spans
        ):
            return super().execute_operation(serially)
        plan = plans.plan(
            self.schema, self.operation, self.fragment_definitions, self.variable_values
        )
        if plan is None:
            return super().execute_operation(serially)
        return self.execute_plan(plan)

    def execute_plan(self, plan: OperationPlan) -> ExecutionResult | Awaitable[ExecutionResult]:
        """The operation's result, as `execute_operation` would give it."""
        try:
            if plan.serial:
                result = self.execute_selection_serially(plan.root, self.root_value, None)
            else:
                result = self.execute_selection(plan.root, self.root_value, None)
            if self.is_awaitable(result):

                async def await_result() -> ExecutionResult:
                    try:
                        data = await result
                    except GraphQLError as error:
                        self.collected_errors.add(error, None)
                        return cast(ExecutionResult, self.build_response(None))
                    except Exception:
                        await self.cancel_incremental_work()
                        self.run_async_work_finished_hook()
                        raise
                    return cast(ExecutionResult, self.build_response(data))

                return await_result()
            data = cast(dict[str, Any], result)
        except GraphQLError as error:
            self.collected_errors.add(error, None)
            return cast(ExecutionResult, self.build_response(None))
        return cast(ExecutionResult, self.build_response(data))

    def execute_selection_serially(
        self, selection: Selection, source: Any, path: Path | None
    ) -> Any:
        """`execute_fields_serially`: each field after the one before has completed."""
        is_awaitable = self.is_awaitable
        type_name = selection.type_name
        results: dict[str, Any] = {}
        steps = selection.steps
        for index, step in enumerate(steps):
            result = self.execute_step(step, source, Path(path, step.key, type_name))
            if is_awaitable(result):

                async def rest(index: int, result: Any) -> dict[str, Any]:
                    results[steps[index].key] = await result
                    for step in steps[index + 1 :]:
                        value = self.execute_step(step, source, Path(path, step.key, type_name))
                        results[step.key] = await value if is_awaitable(value) else value
                    return results

                return rest(index, result)
            results[step.key] = result
        return results

    def execute_selection(self, selection: Selection, source: Any, path: Path | None) -> Any:
        """`execute_fields`: every field started, the awaitable ones gathered."""
        results: dict[str, Any] = {}
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        type_name = selection.type_name
        try:
            for step in selection.steps:
                attr = step.attr
                if attr is None:
                    result = self.execute_step(step, source, Path(path, step.key, type_name))
                else:
                    # Strawberry's resolver of a plain field is `getattr`: read it directly, and
                    # a string (a boolean) of a String or ID (a Boolean) field, or a null of a
                    # nullable one, is its own completed value.
                    try:
                        value = getattr(source, attr)
                    except Exception as raw_error:
                        field_path = Path(path, step.key, type_name)
                        self.handle_field_error(
                            raw_error, step.return_type, step.details, field_path
                        )
                        result = None
                    else:
                        if type(value) is step.leaf or (value is None and step.nullable):
                            results[step.key] = value
                            continue
                        field_path = Path(path, step.key, type_name)
                        result = self.complete_step(step, None, field_path, value)
                results[step.key] = result
                if is_awaitable(result):
                    awaitable_fields.append(step.key)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            if len(awaitable_fields) == 1:
                field = awaitable_fields[0]
                results[field] = await results[field]
            else:
                awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
                results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()

    def execute_step(self, step: Step, source: Any, path: Path) -> Any:
        """`execute_field` for one planned field."""
        kind = step.kind
        if kind is TYPENAME:
            return step.typename
        info: Info | None = None
        try:
            if kind is BASIC:
                result = step.resolve(source, None)
            else:
                info = self.build_resolve_info(step.field_def, step.nodes, step.parent_type, path)
                if step.has_args:
                    args = get_argument_values(
                        step.field_def, step.node, self.variable_values, None, self.hide_suggestions
                    )
                    result = step.resolve(source, info, **args)
                else:
                    result = step.resolve(source, info)
        except Exception as raw_error:
            self.handle_field_error(raw_error, step.return_type, step.details, path)
            return None
        return self.complete_step(step, info, path, result)

    def complete_step(self, step: Step, info: Info | None, path: Path, result: Any) -> Any:
        """The rest of `execute_field`: the resolved value completed, errors handled."""
        try:
            if self.is_awaitable(result):
                return self.complete_awaitable_step(step, info, path, result)
            completed = self.complete_planned(step.completion, step, info, path, result)
            if self.is_awaitable(completed):

                async def await_completed() -> Any:
                    try:
                        return await completed
                    except Exception as raw_error:
                        self.handle_field_error(raw_error, step.return_type, step.details, path)
                        return None

                return await_completed()
        except Exception as raw_error:
            self.handle_field_error(raw_error, step.return_type, step.details, path)
            return None
        return completed

    async def complete_awaitable_step(
        self, step: Step, info: Info | None, path: Path, result: Any
    ) -> Any:
        """`complete_awaitable_value` for one planned field."""
        try:
            resolved = await result
            completed = self.complete_planned(step.completion, step, info, path, resolved)
            if self.is_awaitable(completed):
                completed = await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, step.return_type, step.details, path)
            completed = None
        return completed

    def info_of(self, step: Step, info: Info | None, path: Path) -> Info:
        """The field's resolve info: the one its resolver got, or one made now (a field whose
        resolver takes none still gives it to type resolution and to graphql-core)."""
        if info is not None:
            return info
        return self.build_resolve_info(step.field_def, step.nodes, step.parent_type, path)

    def complete_planned(
        self,
        completion: Completion,
        step: Step,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Any:
        """`complete_value`, by the plan's completion of the field's type."""
        if isinstance(result, Exception):
            raise result
        kind = completion.kind
        if kind is NON_NULL:
            inner = completion.inner
            assert inner is not None
            completed = self.complete_planned(inner, step, info, path, result)
            if completed is None:
                raise TypeError(completion.message)
            return completed
        if result is None or result is Undefined:
            return None
        if kind is LEAF:
            text_only = completion.text_only
            if text_only is not None and type(result) is text_only:
                return result
            assert completion.coerce is not None
            coerced = completion.coerce(result)
            if coerced is Undefined or coerced is None:
                raise TypeError(
                    f"Expected `{inspect(completion.type)}.coerce_output_value("
                    f"{inspect(result)})` to return non-nullable value, returned:"
                    f" {inspect(coerced)}"
                )
            return coerced
        if kind is OBJECT:
            return self.complete_planned_object(completion, step, info, path, result)
        if kind is LIST:
            if self.is_async_iterable(result):
                # No plan for it: graphql-core completes the list, items and all.
                return self.complete_value(
                    completion.type,
                    step.details,
                    self.info_of(step, info, path),
                    path,
                    result,
                    None,
                )
            if not is_iterable(result):
                raise GraphQLError(completion.message)
            return self.complete_planned_list(completion, step, info, path, result)
        if kind is ABSTRACT:
            return self.complete_planned_abstract(completion, step, info, path, result)
        raise TypeError(f"Cannot complete value of unexpected output type: '{completion.type}'.")

    def complete_planned_list(
        self,
        completion: Completion,
        step: Step,
        info: Info | None,
        path: Path,
        items: Iterable[Any],
    ) -> Any:
        """`complete_iterable_value`: each item completed, the awaitable ones gathered."""
        item_completion = completion.inner
        assert item_completion is not None
        item_selection = completion.items
        is_awaitable = self.is_awaitable
        completed_results: list[Any] = []
        append = completed_results.append
        awaitable_indices: list[int] = []
        iterator = iter(items)
        index = 0
        try:
            for item in iterator:
                item_path = Path(path, index, None)
                if is_awaitable(item):
                    append(
                        self.complete_awaitable_item(item_completion, step, info, item_path, item)
                    )
                    awaitable_indices.append(index)
                elif self.complete_planned_item(
                    item_completion,
                    step,
                    info,
                    item_path,
                    item,
                    completed_results,
                    item_selection,
                ):
                    awaitable_indices.append(index)
                index += 1
        except Exception:
            # As graphql-core: the awaitables made so far, and any left in the iterator, are
            # settled in the background before the error propagates.
            pending = [completed_results[i] for i in awaitable_indices]
            pending.extend(collect_iterator_awaitables(iterator, is_awaitable))
            if pending:
                self.settle_in_background(pending)
            raise
        if not awaitable_indices:
            return completed_results

        async def get_completed_results() -> list[Any]:
            if len(awaitable_indices) == 1:
                index = awaitable_indices[0]
                completed_results[index] = await completed_results[index]
            else:
                awaited = await gather_with_cancel(
                    *(completed_results[index] for index in awaitable_indices)
                )
                for index, value in zip(awaitable_indices, awaited, strict=True):
                    completed_results[index] = value
            return completed_results

        return get_completed_results()

    def complete_planned_item(
        self,
        completion: Completion,
        step: Step,
        info: Info | None,
        item_path: Path,
        item: Any,
        completed_results: list[Any],
        items: Selection | None,
    ) -> bool:
        """`complete_list_item_value`: the item appended; whether it is awaitable."""
        try:
            if (
                items is not None
                and item is not None
                and item is not Undefined
                and not isinstance(item, Exception)
            ):
                # An object without `is_type_of`: what `complete_value` comes down to.
                completed = self.execute_selection(items, item, item_path)
            else:
                completed = self.complete_planned(completion, step, info, item_path, item)
            if self.is_awaitable(completed):

                async def await_completed() -> Any:
                    try:
                        return await completed
                    except Exception as raw_error:
                        self.handle_field_error(raw_error, completion.type, step.details, item_path)
                        return None

                completed_results.append(await_completed())
                return True
            completed_results.append(completed)
        except Exception as raw_error:
            self.handle_field_error(raw_error, completion.type, step.details, item_path)
            completed_results.append(None)
        return False

    async def complete_awaitable_item(
        self,
        completion: Completion,
        step: Step,
        info: Info | None,
        item_path: Path,
        item: Any,
    ) -> Any:
        """`complete_awaitable_list_item_value`."""
        try:
            resolved = await item
            completed = self.complete_planned(completion, step, info, item_path, resolved)
            if self.is_awaitable(completed):
                completed = await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, completion.type, step.details, item_path)
            return None
        return completed

    def complete_planned_abstract(
        self,
        completion: Completion,
        step: Step,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Any:
        """`complete_abstract_value`: the runtime type resolved, then its planned selection."""
        abstract = completion.abstract
        assert abstract is not None
        info = self.info_of(step, info, path)
        resolve_type_fn = abstract.resolve_type or self.type_resolver
        runtime_type = resolve_type_fn(result, info, abstract)
        if self.is_awaitable(runtime_type):

            async def await_complete_object_value() -> Any:
                object_type = self.ensure_valid_runtime_type(
                    await runtime_type, abstract, step.details, info, result
                )
                value = self.complete_planned_object(
                    completion.by_type[object_type.name], step, info, path, result
                )
                if self.is_awaitable(value):
                    return await value
                return value

            return await_complete_object_value()
        object_type = self.ensure_valid_runtime_type(
            runtime_type, abstract, step.details, info, result
        )
        return self.complete_planned_object(
            completion.by_type[object_type.name], step, info, path, result
        )

    def complete_planned_object(
        self,
        completion: Completion,
        step: Step,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Any:
        """`complete_object_value`: `is_type_of` checked, then the planned selection."""
        selection = completion.selection
        assert selection is not None
        is_type_of_fn = completion.is_type_of
        if is_type_of_fn is not None:
            is_type_of = is_type_of_fn(result, self.info_of(step, info, path))
            if self.is_awaitable(is_type_of):

                async def execute_subfields_async() -> Any:
                    if not await is_type_of:
                        raise invalid_return_type_error(selection.type, result, step.details)
                    sub_fields = self.execute_selection(selection, result, path)
                    if self.is_awaitable(sub_fields):
                        return await sub_fields
                    return sub_fields

                return execute_subfields_async()
            if not is_type_of:
                raise invalid_return_type_error(selection.type, result, step.details)
        return self.execute_selection(selection, result, path)


def planned_executor(plans: PlanCache) -> type[PlannedExecutor]:
    """The executor class of a schema whose hot operations run from `plans`."""
    return type("PlannedExecutor", (PlannedExecutor,), {"plans": plans})
