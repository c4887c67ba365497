"""POST /api/timers: validate ``{"name", "fireAt"}``, insert one row, answer 201 with it."""

from __future__ import annotations

from django.urls import path
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.bare_drf.models import BareTimer


class BareCreateApi(APIView):
    class InputSerializer(serializers.Serializer[dict[str, object]]):
        name = serializers.CharField(max_length=200)
        fireAt = serializers.DateTimeField()  # noqa: N815 (the API's field name)

    def post(self, request: Request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = BareTimer.objects.create(name=body.validated_data["name"], fire_at=body.validated_data["fireAt"])
        return Response(
            {
                "id": str(row.id),
                "name": row.name,
                "fireAt": row.fire_at.isoformat(),
                "createdAt": row.created_at.isoformat(),
            },
            status=status.HTTP_201_CREATED,
        )


urlpatterns = [path("api/timers", BareCreateApi.as_view())]
