"""Health, unknown routes, and an OpenAPI document that says what the routes do."""

from __future__ import annotations

import httpx


async def test_health(api: httpx.AsyncClient) -> None:
    response = await api.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_unknown_route_and_method_use_the_error_shape(api: httpx.AsyncClient) -> None:
    missing = await api.get("/nowhere")
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})
    wrong_method = await api.delete("/jobs")
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"error": "method not allowed"},
    )


async def test_openapi_documents_400_not_422(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert all("422" not in op["responses"] for op in operations)
    create_job = schema["paths"]["/jobs"]["post"]
    assert set(create_job["responses"]) >= {"201", "400", "401", "403", "409"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    job_fields = schema["components"]["schemas"]["JobSpec"]["properties"]
    assert {"slug", "entryPoint", "timeoutMs", "retryPolicy"} <= set(job_fields)
    assert job_fields["timeoutMs"]["anyOf"][0]["minimum"] == 1000


async def test_docs_page_is_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
